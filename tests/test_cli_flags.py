"""The command line's gflags-style flags."""

import pytest

from decaffe.cli.flags import FlagParser


def parser():
    fp = FlagParser("x")
    fp.flag("solver", default="")
    fp.flag("iterations", type=int, default=50)
    fp.bool_flag("shuffle")
    fp.add_argument("root")
    return fp


@pytest.mark.parametrize("argv", [["-solver", "s.prototxt"], ["-solver=s.prototxt"],
                                  ["--solver", "s.prototxt"], ["--solver=s.prototxt"]])
def test_valued_flag_spellings(argv):
    assert parser().parse(argv + ["r"]).solver == "s.prototxt"


@pytest.mark.parametrize("argv,want", [([], False), (["-shuffle"], True), (["--shuffle"], True),
                                       (["-shuffle=true"], True), (["-shuffle=false"], False),
                                       (["-noshuffle"], False), (["--shuffle=0"], False)])
def test_boolean_flag_spellings(argv, want):
    ns = parser().parse(argv + ["ROOT/"])
    assert ns.shuffle is want and ns.root == "ROOT/"


def test_bare_boolean_does_not_take_the_next_word():
    ns = parser().parse(["-shuffle", "ROOT/", "-iterations", "3"])
    assert ns.shuffle is True and ns.root == "ROOT/" and ns.iterations == 3


def test_bad_boolean_value_exits():
    with pytest.raises(SystemExit):
        parser().parse(["-shuffle=maybe", "r"])
