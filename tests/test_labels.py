"""The label convention: numbers, names, order and neighbours."""

import numpy as np
import pytest

from cdeg import labels


def test_convention_matches_verse_spineps():
    assert labels.VERTEBRA_NAMES == ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
    assert labels.VERTEBRA_LABELS == (2, 3, 4, 5, 6, 7, 8)
    assert labels.DISC_NAMES == ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1")
    assert labels.DISC_LABELS == (102, 103, 104, 105, 106, 107)
    assert labels.label_of("C5-C6") == 105 and labels.name_of(8) == "T1"


def test_structures_alternate_cranio_caudally():
    kinds = [s.kind for s in labels.STRUCTURES]
    assert kinds == ["vertebra", "disc"] * 6 + ["vertebra"]
    assert [s.order for s in labels.STRUCTURES] == list(range(13))
    for d in labels.DISC_LABELS:
        up, lo = labels.vertebrae_of_disc(d)
        assert labels.neighbours(d) == (up, lo)
        assert labels.disc_between(up, lo) == d


def test_ends_have_no_outer_neighbour():
    assert labels.neighbours("C2") == (None, 102)
    assert labels.neighbours("T1") == (107, None)


def test_unknown_key_lists_valid_labels():
    with pytest.raises(KeyError, match="105=C5-C6"):
        labels.structure(42)
    with pytest.raises(KeyError):
        labels.structure("L1")
    with pytest.raises(ValueError):
        labels.disc_between("C3", "C5")


def test_numpy_integers_and_sorting():
    assert labels.name_of(np.uint8(105)) == "C5-C6"
    assert labels.sort_labels([8, 102, 2, 105, 5]) == [2, 102, 5, 105, 8]
    assert labels.invalid_labels([0, 2, 9, 105, 200]) == [9, 200]
