"""`decaffe prepare_digits [-out DIR]`: build the bundled handwritten-digits LMDBs
(DIR/digits_train_lmdb with 1,437 images, DIR/digits_test_lmdb with 360; 1×8×8 uint8)
from the copy scikit-learn ships. Existing databases are kept."""

from __future__ import annotations

from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Build the bundled 8x8 handwritten-digits LMDBs.")
    fp.flag("out", default="data/digits", help="folder for the two databases")
    args = fp.parse(argv[1:])
    from ..data.digits import ensure_digits  # after parsing: -help needs no PyTorch

    train, test = ensure_digits(args.out)
    print(train)
    print(test)
    return 0
