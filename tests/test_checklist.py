"""TRIPOD+AI and PROBAST+AI checklist data (cdeg.modeling.checklist)."""

from __future__ import annotations

from cdeg.modeling import checklist as K

from cdeg.report.html import table


def test_every_item_has_id_text_and_a_valid_owner():
    for it in K.CHECKLIST:
        assert it.id and it.topic and it.text, it
        assert it.owner in K.OWNERS, it
        assert it.guideline in K.GUIDELINES, it
        if it.owner != "user":
            assert it.where, f"{it.id}: a cdeg or partly item must say where (and what is missing)"
        if it.owner == "partly":
            assert "Missing:" in it.where, f"{it.id}: say what the author must add"


def test_ids_are_unique():
    ids = [it.id for it in K.CHECKLIST]
    assert len(ids) == len(set(ids))


def test_item_counts_match_the_publications():
    # TRIPOD+AI: 27 items, 52 sub-items; PROBAST+AI: 16 development and 18 evaluation signalling questions.
    assert len(K.TRIPOD_AI) == 52
    assert len({it.id.split()[1].rstrip("abcdefg") for it in K.TRIPOD_AI}) == 27
    assert len(K.PROBAST_AI_DEVELOPMENT) == 16
    assert len(K.PROBAST_AI_EVALUATION) == 18


def test_rows_render_as_an_html_table():
    rows = K.checklist_rows(guideline="PROBAST+AI")
    assert len(rows) == 34 and all(len(r) == len(K.CHECKLIST_HEAD) for r in rows)
    html = table(K.CHECKLIST_HEAD, K.checklist_rows())
    assert html.count("<tr>") == len(K.CHECKLIST) + 1
    assert sum(K.owner_counts().values()) == len(K.CHECKLIST)


def test_unknown_guideline_names_the_valid_ones():
    import pytest

    with pytest.raises(ValueError, match="TRIPOD\\+AI, PROBAST\\+AI"):
        K.checklist_rows(guideline="CONSORT")
