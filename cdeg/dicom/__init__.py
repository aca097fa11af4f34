"""DICOM in and out: import a hospital DICOM export as a de-identified cohort, write a cohort as DICOM.

* :func:`import_dicom` (``cdeg import-dicom``) walks a DICOM folder tree, picks per patient the sagittal
  T2 MRI series and the lateral cervical radiograph, converts them to NIfTI in the cohort layout with
  their geometry, replaces patient ids by pseudonyms (random salt kept in the id map), reports every
  file it skipped and every image with text burned into its pixels (blanked on request).
* :func:`write_cohort_dicom` writes an existing NIfTI cohort as a DICOM tree with realistic identifying
  tags, decoy series and non-image files: the test bed for the importer and for de-identification.

Modules: :mod:`~cdeg.dicom.scan` (walk, read headers, group, classify, pick), :mod:`~cdeg.dicom.convert`
(series -> SimpleITK image with geometry), :mod:`~cdeg.dicom.deid` (pseudonyms, salt, id map, path keys),
:mod:`~cdeg.dicom.burned_in` (text burned into radiographs: find and mask),
:mod:`~cdeg.dicom.api` (the import stage), :mod:`~cdeg.dicom.write` (cohort -> DICOM),
:mod:`~cdeg.dicom.cli` (click commands).
"""

from __future__ import annotations

from typing import Any

__all__ = ["import_dicom", "write_cohort_dicom"]


def __getattr__(name: str) -> Any:
    # Lazy: `import cdeg.dicom` must not import pydicom until a function is used.
    if name == "import_dicom":
        from cdeg.dicom.api import import_dicom

        return import_dicom
    if name == "write_cohort_dicom":
        from cdeg.dicom.write import write_cohort_dicom

        return write_cohort_dicom
    raise AttributeError(name)
