"""`decaffe convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME`: the SSD fork's
convert_annoset (weiliu89/caffe tools/convert_annoset.cpp, util/io.cpp).

Each LISTFILE line is 'IMAGE LABEL' (-anno_type classification) or 'IMAGE ANNOTATION'
(-anno_type detection, the default's alternative SSD uses): the image is read from ROOTFOLDER
+ IMAGE through OpenCV (colour BGR, or -gray), resized to -resize_height x -resize_width or
(keeping its aspect ratio) so its short side reaches -min_dim and its long side stays within
-max_dim, and stored raw or (-encoded / -encode_type) encoded, with its channels, height and
width recorded. For detection, ROOTFOLDER + ANNOTATION is a VOC XML file (-label_type xml:
objects' name, difficult and integer bndbox, names mapped to labels by the -label_map_file
LabelMap) or a text file (-label_type txt: 'LABEL XMIN YMIN XMAX YMAX' lines, pixels); boxes
are normalized by the XML's size (or the original image's), grouped by label with
instance ids counting up within a group. A missing annotation file gives an image without
boxes. Records are AnnotatedDatums (type BBOX for detection; the Datum's label for
classification, -1 for detection) under keys '%08d_IMAGE' in a new LMDB or LevelDB.
Unreadable images are skipped with a warning, as the fork does.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from ..errors import DataError, ParseError
from ..formats import prototxt
from ..proto import caffe_pb2
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Convert a set of images and annotations to the leveldb/lmdb "
                    "format used as input for Caffe (SSD's AnnotatedDatum).")
    fp.bool_flag("gray", False, "treat images as grayscale ones")
    fp.bool_flag("shuffle", False, "randomly shuffle the order of images and their labels")
    fp.flag("backend", default="lmdb", help="the backend {lmdb, leveldb} for storing the result")
    fp.flag("anno_type", default="classification",
            help="the type of annotation {classification, detection}")
    fp.flag("label_type", default="xml", help="the type of annotation file {xml, txt}")
    fp.flag("label_map_file", default="", help="a file with a LabelMap protobuf message")
    fp.bool_flag("check_label", False, "check that there is no duplicated name/label")
    fp.flag("min_dim", type=int, default=0, help="minimum dimension images are resized to "
            "(keeping the aspect ratio)")
    fp.flag("max_dim", type=int, default=0, help="maximum dimension images are resized to "
            "(keeping the aspect ratio)")
    fp.flag("resize_width", type=int, default=0, help="width images are resized to")
    fp.flag("resize_height", type=int, default=0, help="height images are resized to")
    fp.bool_flag("check_size", False, "check that all the datum have the same size")
    fp.bool_flag("encoded", False, "store the encoded image in the datum")
    fp.flag("encode_type", default="", help="what type to encode the image as ('png','jpg',...)")
    fp.add_argument("root_folder", help="folder the list's names are relative to (joined as a "
                    "string: end it with /)")
    fp.add_argument("listfile", help="text file of 'IMAGE LABEL' or 'IMAGE ANNOTATION' lines")
    fp.add_argument("db_name", help="the database to create")
    a = fp.parse(argv[1:])
    convert_annoset(a.root_folder, a.listfile, a.db_name, anno_type=a.anno_type,
                    label_type=a.label_type, label_map_file=a.label_map_file,
                    check_label=a.check_label, backend=a.backend, gray=a.gray,
                    shuffle=a.shuffle, min_dim=a.min_dim, max_dim=a.max_dim,
                    resize_height=a.resize_height, resize_width=a.resize_width,
                    check_size=a.check_size, encoded=a.encoded, encode_type=a.encode_type)
    return 0


def read_label_map(path: str) -> caffe_pb2.LabelMap:
    """A LabelMap from its text file (the fork's ReadProtoFromTextFile); ParseError with the
    file's line and column, also for a missing file or bytes that are not UTF-8."""
    lm = caffe_pb2.LabelMap()
    prototxt.read_text(path, lm)
    return lm


def name_to_label(lm: caffe_pb2.LabelMap, strict: bool, path: str = "") -> dict[str, int]:
    """MapNameToLabel: name -> label; with strict, a duplicated name is an error."""
    out: dict[str, int] = {}
    for item in lm.item:
        if strict and item.name in out:
            raise DataError(f"{path}: there are many duplicates of name: {item.name}")
        out[item.name] = int(item.label)
    return out


def read_image(path: str, height: int, width: int, min_dim: int, max_dim: int,
               is_color: bool) -> np.ndarray | None:
    """The fork's ReadImageToCVMat: aspect-keeping min_dim/max_dim scaling, or a resize to
    height×width, bilinear."""
    import cv2  # loaded when converting, not for -help

    if not os.path.isfile(path):
        return None
    img = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    if min_dim > 0 or max_dim > 0:
        rows, cols = img.shape[:2]
        lo, hi = min(rows, cols), max(rows, cols)
        factor = np.float32(1)
        if min_dim > 0 and lo < min_dim:
            factor = np.float32(min_dim) / np.float32(lo)
        if max_dim > 0 and int(factor * np.float32(hi)) > max_dim:
            factor = np.float32(max_dim) / np.float32(hi)
        if factor != 1:
            img = cv2.resize(img, (0, 0), fx=float(factor), fy=float(factor),
                             interpolation=cv2.INTER_LINEAR)
    elif height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def image_datum(path: str, label: int, height: int, width: int, min_dim: int, max_dim: int,
                is_color: bool, encoding: str) -> caffe_pb2.Datum | None:
    """The fork's ReadImageToDatum: raw pixels, or the image encoded (the file's own bytes
    when nothing would change them), with channels/height/width recorded either way."""
    import cv2  # loaded when converting, not for -help

    # decaffe.data imports cv2 and torch: loaded when run, not for -help
    from ..data.datum import image_to_datum

    img = read_image(path, height, width, min_dim, max_dim, is_color)
    if img is None:
        return None
    if not encoding:
        return image_to_datum(img, label)
    d = caffe_pb2.Datum()
    channels = 1 if img.ndim == 2 else img.shape[2]
    ext = os.path.splitext(path)[1][1:].lower()
    same = ext == encoding.lower() or (encoding.lower() == "jpg" and ext == "jpeg")
    if (channels == 3) == is_color and not (height or width or min_dim or max_dim) and same:
        with open(path, "rb") as f:
            d.data = f.read()
    else:
        ok, buf = cv2.imencode("." + encoding, img)
        if not ok:
            raise DataError(f"{path}: OpenCV cannot encode as '{encoding}'")
        d.data = buf.tobytes()
    d.channels, d.height, d.width = channels, img.shape[0], img.shape[1]
    d.label = int(label)
    d.encoded = True
    return d


def _add_box(ad: caffe_pb2.AnnotatedDatum, label: int, box: Sequence[float],
             difficult: bool) -> None:
    """Append a box to its label's group (created on first use), instance ids counting up."""
    group = next((g for g in ad.annotation_group if g.group_label == label), None)
    if group is None:
        group = ad.annotation_group.add()
        group.group_label = label
        inst = 0
    else:
        inst = group.annotation[-1].instance_id + 1 if len(group.annotation) else 0
    a = group.annotation.add()
    a.instance_id = inst
    b = a.bbox
    b.xmin, b.ymin, b.xmax, b.ymax = (float(v) for v in box)
    b.difficult = bool(difficult)


def _int(text: str | None) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return 0  # boost::property_tree's get(path, 0) when the text is not an integer


def read_xml(path: str, img_h: int, img_w: int, labels: dict[str, int],
             ad: caffe_pb2.AnnotatedDatum, log: TextIO = sys.stderr) -> None:
    """ReadXMLToAnnotatedDatum: VOC objects (name, difficult, bndbox in pixels)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        line, col = getattr(e, "position", (None, None))
        raise ParseError(f"not a valid XML annotation: {e}", path, line, col) from None
    size = root.find("size")
    try:
        height = int(size.find("height").text)
        width = int(size.find("width").text)
    except (AttributeError, TypeError, ValueError):
        print(f"When parsing {path}: no annotation.size; using the image's", file=log)
        height, width = img_h, img_w
    if height != img_h:
        print(f"{path} inconsistent image height.", file=log)
    if width != img_w:
        print(f"{path} inconsistent image width.", file=log)
    if not width or not height:
        raise DataError(f"{path}: no valid image width/height")
    for obj in root.findall("object"):
        name_el = obj.find("name")
        if name_el is None:
            raise DataError(f"{path}: an object has no name")
        name = (name_el.text or "").strip()
        if name not in labels:
            raise DataError(f"{path}: unknown name: {name} (not in the label map)")
        difficult = False
        for child in obj:
            if child.tag == "difficult":
                difficult = (child.text or "").strip() == "1"
            elif child.tag == "bndbox":
                x0, y0 = _int(child.findtext("xmin")), _int(child.findtext("ymin"))
                x1, y1 = _int(child.findtext("xmax")), _int(child.findtext("ymax"))
                if x0 > x1 or y0 > y1 or x1 > width or y1 > height:
                    print(f"{path} bounding box exceeds image boundary or is inverted.",
                          file=log)
                w, h = np.float32(width), np.float32(height)
                _add_box(ad, labels[name], (np.float32(x0) / w, np.float32(y0) / h,
                                            np.float32(x1) / w, np.float32(y1) / h), difficult)


def read_txt(path: str, img_h: int, img_w: int, ad: caffe_pb2.AnnotatedDatum) -> None:
    """ReadTxtToAnnotatedDatum: 'LABEL XMIN YMIN XMAX YMAX' lines in pixels."""
    with open(path) as f:
        tokens = [(t, n) for n, line in enumerate(f, 1) for t in line.split()]
    w, h = np.float32(img_w), np.float32(img_h)
    for i in range(0, len(tokens) - 4, 5):
        try:
            label = int(tokens[i][0])
            x0, y0, x1, y1 = (np.float32(float(t[0])) for t in tokens[i + 1:i + 5])
        except ValueError:
            raise DataError(f"{path}:{tokens[i][1]}: expected 'LABEL XMIN YMIN XMAX YMAX'") \
                from None
        _add_box(ad, label, (x0 / w, y0 / h, x1 / w, y1 / h), False)


def _read_list(path: str, detection: bool) -> list[tuple[str, str | int]]:
    try:
        with open(path) as f:
            tokens = [(t, n) for n, line in enumerate(f, 1) for t in line.split()]
    except OSError as e:
        raise DataError(f"cannot open the list file '{path}': {e.strerror or e}") from None
    out: list[tuple[str, str | int]] = []
    for i in range(0, len(tokens) - 1, 2):
        name, (second, line) = tokens[i][0], tokens[i + 1]
        if detection:
            out.append((name, second))
        else:
            try:
                out.append((name, int(second)))
            except ValueError:
                raise DataError(f"{path}:{line}: expected 'FILENAME LABEL', got label "
                                f"{second!r}") from None
    return out


def convert_annoset(root_folder: str, listfile: str, db_name: str, *,
                    anno_type: str = "classification", label_type: str = "xml",
                    label_map_file: str = "", check_label: bool = False,
                    backend: str = "lmdb", gray: bool = False, shuffle: bool = False,
                    min_dim: int = 0, max_dim: int = 0, resize_height: int = 0,
                    resize_width: int = 0, check_size: bool = False, encoded: bool = False,
                    encode_type: str = "", seed: int | None = None,
                    log: TextIO = sys.stderr) -> int:
    """Build the database; returns the number of records stored."""
    import cv2  # loaded when converting, not for -help

    # decaffe.data imports cv2 and torch: loaded when run, not for -help
    from ..data.db import NEW, open_db

    if anno_type not in ("classification", "detection"):
        raise DataError(f"-anno_type: unknown annotation type '{anno_type}' (classification "
                        "or detection)")
    detection = anno_type == "detection"
    labels: dict[str, int] = {}
    if detection:
        if label_type not in ("xml", "txt"):
            raise DataError(f"-label_type: unknown label file type '{label_type}' (xml or txt)")
        if label_type == "xml" or label_map_file:
            labels = name_to_label(read_label_map(label_map_file), check_label, label_map_file)
    lines = _read_list(listfile, detection)
    if shuffle:
        print("Shuffling data", file=log)
        order = np.random.default_rng(seed).permutation(len(lines))
        lines = [lines[i] for i in order]
    print(f"A total of {len(lines)} images.", file=log)
    if encode_type and not encoded:
        print("encode_type specified, assuming encoded=true.", file=log)
    is_color = not gray
    db = open_db(db_name, backend, NEW)
    txn = db.transaction()
    count, data_size = 0, None
    try:
        for line_id, (name, second) in enumerate(lines):
            enc = encode_type
            if encoded and not enc:
                enc = os.path.splitext(name)[1][1:].lower()
                if not enc:
                    print(f"Failed to guess the encoding of '{name}'", file=log)
            path = root_folder + name
            ad = caffe_pb2.AnnotatedDatum()
            label = -1 if detection else int(second)
            datum = image_datum(path, label, resize_height, resize_width, min_dim, max_dim,
                                is_color, enc)
            if datum is None:
                print(f"Failed to read {name}", file=log)
                continue
            ad.datum.CopyFrom(datum)
            if detection:
                anno = root_folder + str(second)
                if os.path.exists(anno):
                    orig = cv2.imread(path, cv2.IMREAD_UNCHANGED)
                    oh, ow = orig.shape[:2]
                    if label_type == "xml":
                        read_xml(anno, oh, ow, labels, ad, log)
                    else:
                        read_txt(anno, oh, ow, ad)
                ad.type = caffe_pb2.AnnotatedDatum.BBOX
            if check_size and not datum.encoded:
                size = datum.channels * datum.height * datum.width
                if data_size is None:
                    data_size = size
                elif len(datum.data) != data_size:
                    raise DataError(f"{path}: incorrect data field size {len(datum.data)} "
                                    f"(the first image has {data_size})")
            txn.put(f"{line_id:08d}_{name}", ad.SerializeToString())
            count += 1
            if count % 1000 == 0:
                txn.commit()
                print(f"Processed {count} files.", file=log)
        if count % 1000 != 0:
            txn.commit()
            print(f"Processed {count} files.", file=log)
    finally:
        db.close()
    return count
