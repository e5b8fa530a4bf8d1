"""schemathesis hooks for the run beside a real worker (tests/integrations/test_schemathesis.py).

Random bytes are never a B-scan, so without help every generated upload is rejected and
the worker gets nothing to read. Here about half of the generated uploads (the first one
always, as Hypothesis tries the simplest draw first) become valid uploads into an
examination that exists: a real B-scan before the generated files, which are still sent
and rejected. The B-scans are taken in turn: the same image twice in one examination is
refused as a duplicate.

Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS``, in its own process (no
Django): ``OCT_FUZZ_CASE_ID`` is the examination, ``OCT_FUZZ_BSCANS`` a folder of B-scans.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

CASE_ID = int(os.environ["OCT_FUZZ_CASE_ID"])
BSCANS = itertools.cycle([p.read_bytes() for p in sorted(Path(os.environ["OCT_FUZZ_BSCANS"]).iterdir())])


def _with_bscan(case):
    """The case as a valid upload: a real B-scan first, then the generated files' bytes.
    The other generated fields go: a negative case's invalid ``eye`` would refuse it all."""
    files = case.body.get("files")
    generated = [f for f in files if isinstance(f, bytes)] if isinstance(files, list) else []
    case.path_parameters = {**(case.path_parameters or {}), "id": CASE_ID}
    case.body = {"files": [next(BSCANS), *generated]}
    return case


@schemathesis.hook.apply_to(operation_id="cases_scans_create")
def flatmap_case(context, case):
    if not isinstance(case.body, dict):  # negative cases may send a body that is no form at all
        return st.just(case)
    return st.sampled_from((True, False)).map(lambda real: _with_bscan(case) if real else case)
