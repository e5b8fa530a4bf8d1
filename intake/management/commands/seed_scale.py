"""manage.py seed_scale --scans 1000000 [--patients 50000] — a realistic volume of rows, by SQL.

For the scale benchmarks (bench/pages.py) only: PostgreSQL, synthetic rows, no image
files. Adds to what is there; run it on an empty database made for the purpose.

Per scan: one prediction of the active model version (class mix of a retina clinic,
2% refused by the input gate), one review in every stage, and the grades that stage
implies (tier 1 from QC on; two tier 2 grades from verification on, disagreeing in
arbitration; tier 3 for verified scans): 2.0 grades per scan.

``--volumes N --slices S`` adds N volumes of S B-scans each (beyond ``--scans``), each in
an examination of its own, reviewed as one eye: one review per volume in the same stage
mix, the grades on the volume, every B-scan read (NORMAL but for one B-scan in the
volume's class) and carrying its volume's stage.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Max

from cases.diagnoses import URGENCY_BY_DIAGNOSIS
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from cases.models import Case, Patient, Scan, Volume
from cases.roles import Role
from inference.models import ModelVersion, Prediction
from verification.models import Grade, Review

# Share of scans per stage, in order, out of 100.
STAGES = [
    ("quality_control", 30),
    ("grading", 25),
    ("verification", 10),
    ("arbitration", 5),
    ("verified", 25),
    ("excluded", 5),
]
# Predicted class by scan number modulo 20 (a retina clinic's mix); gate refusals apart.
CLASS_OF = "CASE WHEN g % 20 < 8 THEN 'NORMAL' WHEN g % 20 < 11 THEN 'DRUSEN' WHEN g % 20 < 16 THEN 'CNV' ELSE 'DME' END"
# The class of scan g's one reading, blank where the gate refused it (every 50th scan);
# written onto the scan as its copy (current_*) in the same INSERT, so no UPDATE rewrites
# a million rows (scan_reading_copy's rule: blank unless the reading passed the gate).
SCAN_CLASS = f"CASE WHEN g % 50 = 49 THEN '' ELSE {CLASS_OF} END"
# A grade's columns after the one it is on (scan_id or volume_id).
GRADE_COLUMNS = (
    "tier, grader_id, created_at, time_taken_ms, comment, accepted, exclusion_reason, label,"
    " finding_cnv, finding_macular_edema, finding_drusen, finding_other, confidence, reference_label, key_slices"
)


GRADERS = {"grader1": Role.GRADER_T1, "grader2a": Role.GRADER_T2, "grader2b": Role.GRADER_T2, "grader3": Role.GRADER_T3}


def _grader(name: str, role: str):
    """A grader account of the synthetic rows (no usable password)."""
    user, created = get_user_model().objects.get_or_create(username=f"scale-{name}")
    if created:
        user.set_unusable_password()
        user.save()
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def _stage_sql() -> str:
    parts, upto = [], 0
    for stage, share in STAGES:
        upto += share
        parts.append(f"WHEN g % 100 < {upto} THEN '{stage}'")
    return "CASE " + " ".join(parts) + " END"


def _urgency_sql(column: str) -> str:
    # The one urgency rule (cases.diagnoses), written as SQL.
    whens = " ".join(f"WHEN '{code}' THEN '{urgency}'" for code, urgency in URGENCY_BY_DIAGNOSIS.items())
    return f"CASE {column} {whens} ELSE '' END"


class Command(BaseCommand):
    help = "Fill PostgreSQL with synthetic patients, examinations, scans, readings, reviews and grades (bench only)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--scans", type=int, default=1_000_000)
        parser.add_argument("--patients", type=int, default=None, help="default: scans / 20")
        parser.add_argument("--volumes", type=int, default=0, help="volumes reviewed as one eye, each in its own examination")
        parser.add_argument("--slices", type=int, default=25, help="B-scans per volume (beyond --scans)")

    def handle(self, *args, scans: int, patients: int | None, volumes: int, slices: int, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("seed_scale writes with PostgreSQL's generate_series; set DATABASE_URL to PostgreSQL.")
        if scans < 100:
            raise CommandError("--scans must be at least 100.")
        patients = patients or max(1, scans // 20)
        n_cases = max(patients, scans // 5)
        started = time.perf_counter()
        users = {name: _grader(name, role) for name, role in GRADERS.items()}
        version, _ = ModelVersion.objects.get_or_create(
            name="octnet-synthetic", version="0.0-scale", defaults={"sha256": "0" * 64, "is_active": False}
        )
        if not ModelVersion.objects.filter(is_active=True).exists():
            ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        t1, t2a, t2b, t3 = (users[k].pk for k in ("grader1", "grader2a", "grader2b", "grader3"))
        # The grades this run adds (the scans' and the volumes') are counted by id at the end.
        grades_before = Grade.objects.aggregate(last=Max("id"))["last"] or 0
        with transaction.atomic(), connection.cursor() as cur:
            run = f"{int(time.time())}"
            cur.execute(
                f"""INSERT INTO {Patient._meta.db_table} (identifier, sex, birth_year, notes, created_at, updated_at)
                SELECT 'SYN-{run}-' || g, CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END, 1930 + g % 70, '', now(), now()
                FROM generate_series(0, {int(patients)} - 1) g RETURNING id"""
            )
            first_patient = min(r[0] for r in cur.fetchall())
            cur.execute(
                f"""INSERT INTO {Case._meta.db_table}
                (patient_id, eye, exam_date, device, referring_clinician, status, notes, created_at, updated_at)
                SELECT {int(first_patient)} + g % {int(patients)}, CASE WHEN g % 2 = 0 THEN 'OD' ELSE 'OS' END, date '2020-01-01' + (g % 2000),
                       'Heidelberg Spectralis', '', 'open', '', now(), now()
                FROM generate_series(0, {int(n_cases)} - 1) g RETURNING id"""
            )
            first_case = min(r[0] for r in cur.fetchall())
            scan_table = Scan._meta.db_table
            cur.execute(f"SELECT coalesce(max(id), 0) FROM {scan_table}")
            before = cur.fetchone()[0]
            cur.execute(
                f"""INSERT INTO {scan_table} (uid, case_id, original, image, sha256, original_name, format,
                    original_mode, file_size, width, height, colour_saturation, source_label, source_label_origin,
                    status, status_detail, status_changed_at, analysis_attempts, uploaded_at,
                    current_class, current_urgency, current_urgent, review_stage, review_label)
                SELECT md5('{run}-' || g)::uuid, {int(first_case)} + g % {int(n_cases)}, '', 'scans/image/synthetic.png',
                       md5('a{run}' || g) || md5('b{run}' || g), 'synthetic-' || g || '.png', 'PNG', 'L',
                       50000, 512, 496, 0, '', '', 'analysed', '',
                       timestamp '2024-01-01' + g * interval '20 seconds', 1,
                       timestamp '2024-01-01' + g * interval '20 seconds',
                       cls, {_urgency_sql('cls')}, {_urgency_sql('cls')} = 'urgent',
                       st, CASE WHEN st = 'verified' THEN 'CNV' ELSE '' END
                FROM (SELECT g, {SCAN_CLASS} AS cls, {_stage_sql()} AS st FROM generate_series(0, {int(scans)} - 1) g) n"""
            )
            # g: the scan's number in this run, for the deterministic mixes below, counted
            # by id order (ids follow generate_series' order), not as id - before: the id
            # sequence may have moved past max(id) (rolled-back inserts), and the readings
            # must then still match the class copied onto each scan.
            numbered = (
                f"SELECT id, row_number() OVER (ORDER BY id) - 1 AS g, uploaded_at FROM {scan_table} WHERE id > {before}"
            )
            cur.execute(
                f"""INSERT INTO {Prediction._meta.db_table} (scan_id, model_version_id, p_cnv, p_dme, p_drusen,
                    p_normal, predicted, confidence, urgency, oct_score, gate_passed, heatmap, inference_ms,
                    quality_score, low_confidence, quality, created_at)
                SELECT id, {int(version.pk)}, 0.1, 0.1, 0.1, 0.1, p.cls, 0.7, {_urgency_sql('p.cls')}, 0.97, p.cls <> '', '', 8.5,
                       0.2, false, '{{}}'::jsonb, uploaded_at + interval '1 second'
                FROM (SELECT s.id, s.uploaded_at, {SCAN_CLASS.replace('g %', 's.g %')} AS cls
                      FROM ({numbered}) s) p"""
            )
            cur.execute(
                f"""INSERT INTO {Review._meta.db_table} (scan_id, stage, required_grades, final_label,
                    verified_by_id, verified_at, exclusion_reason, created_at, stage_changed_at, reference_pick)
                SELECT id, st, 2, CASE WHEN st = 'verified' THEN 'CNV' ELSE '' END,
                       CASE WHEN st = 'verified' THEN {int(t3)} END, CASE WHEN st = 'verified' THEN uploaded_at END,
                       CASE WHEN st = 'excluded' THEN 'severe_artifact' ELSE '' END, uploaded_at, uploaded_at, false
                FROM (SELECT s.id, s.uploaded_at, {_stage_sql().replace('g %', 's.g %')} AS st
                      FROM ({numbered}) s) r"""
            )
            grade_cols = f"scan_id, {GRADE_COLUMNS}"
            staged = f"SELECT r.scan_id, r.stage, s.uploaded_at FROM {Review._meta.db_table} r JOIN {scan_table} s ON s.id = r.scan_id WHERE s.id > {before}"
            cur.execute(
                f"""INSERT INTO {Grade._meta.db_table} ({grade_cols})
                SELECT scan_id, 1, {int(t1)}, uploaded_at, 9000, '', stage <> 'excluded',
                       CASE WHEN stage = 'excluded' THEN 'severe_artifact' ELSE '' END, '',
                       NULL, NULL, NULL, NULL, NULL, '', '[]'::jsonb
                FROM ({staged}) x WHERE stage <> 'quality_control'"""
            )
            for grader, which in ((t2a, "first"), (t2b, "second")):
                stages = "('grading', 'verification', 'arbitration', 'verified')" if which == "first" else (
                    "('verification', 'arbitration', 'verified')"
                )
                label = "'CNV'" if which == "first" else "CASE WHEN stage = 'arbitration' THEN 'DME' ELSE 'CNV' END"
                cur.execute(
                f"""INSERT INTO {Grade._meta.db_table} ({grade_cols})
                    SELECT scan_id, 2, {int(grader)}, uploaded_at, 30000, '', NULL, '', {label},
                           true, false, false, false, 4, '', '[]'::jsonb
                    FROM ({staged}) x WHERE stage IN {stages}"""
            )
            cur.execute(
                f"""INSERT INTO {Grade._meta.db_table} ({grade_cols})
                SELECT scan_id, 3, {int(t3)}, uploaded_at, 20000, '', NULL, '', 'CNV', NULL, NULL, NULL, NULL, NULL, '',
                       '[]'::jsonb
                FROM ({staged}) x WHERE stage = 'verified'"""
            )
            if volumes:
                _seed_volumes(cur, run=run, volumes=volumes, slices=slices, version=version.pk, graders=(t1, t2a, t2b, t3))
        with connection.cursor() as cur:
            for model in (Patient, Case, Volume, Scan, Prediction, Review, Grade):
                cur.execute(f"ANALYZE {model._meta.db_table}")
        self.stdout.write(
            f"seeded {patients:,} patients, {n_cases:,} examinations, {scans:,} scans with readings and reviews, "
            f"{volumes:,} volumes of {slices} B-scans, "
            f"{Grade.objects.filter(pk__gt=grades_before).count():,} grades in {time.perf_counter() - started:.0f} s"
        )


def _seed_volumes(cur, *, run: str, volumes: int, slices: int, version: int, graders: tuple[int, int, int, int]) -> None:
    """``volumes`` volumes of ``slices`` B-scans in examinations of their own (see the module),
    spread over every patient in the database."""
    t1, t2a, t2b, t3 = graders
    cur.execute(
        f"""INSERT INTO {Case._meta.db_table}
        (patient_id, eye, exam_date, device, referring_clinician, status, notes, created_at, updated_at)
        SELECT p.ids[1 + g % cardinality(p.ids)], CASE WHEN g % 2 = 0 THEN 'OD' ELSE 'OS' END,
               date '2024-06-01' + (g % 700), 'Heidelberg Spectralis', '', 'open', '', now(), now()
        FROM generate_series(0, {int(volumes)} - 1) g,
             (SELECT array_agg(id ORDER BY id) AS ids FROM {Patient._meta.db_table}) p RETURNING id"""
    )
    first_case = min(r[0] for r in cur.fetchall())
    volume_table = Volume._meta.db_table
    cur.execute(
        f"""INSERT INTO {volume_table} (uploaded_at, uid, case_id, source_format, modality, scan_pattern, laterality,
            acquisition_date, device, slice_count, localizer, sha256, original_name, removed_tags)
        SELECT timestamp '2025-06-01' + g * interval '60 seconds', md5('v{run}-' || g)::uuid, {int(first_case)} + g,
               'dicom', 'OPT', 'volume', CASE WHEN g % 2 = 0 THEN 'OD' ELSE 'OS' END, date '2024-06-01' + (g % 700),
               'Heidelberg Spectralis', {int(slices)}, '', md5('vs{run}' || g) || md5('vt{run}' || g),
               'volume-' || g || '.dcm', '[]'::jsonb
        FROM generate_series(0, {int(volumes)} - 1) g RETURNING id"""
    )
    first_volume = min(r[0] for r in cur.fetchall())
    # v: the volume's number, for the same class and stage mixes as the scans'.
    vol_class = CLASS_OF.replace("g %", "v %")
    vol_stage = _stage_sql().replace("g %", "v %")
    # One B-scan (the middle one) in the volume's class, the others NORMAL.
    slice_class = f"CASE WHEN k = {int(slices) // 2} THEN {vol_class} ELSE 'NORMAL' END"
    scan_table = Scan._meta.db_table
    cur.execute(f"SELECT coalesce(max(id), 0) FROM {scan_table}")
    before = cur.fetchone()[0]
    cur.execute(
        f"""INSERT INTO {scan_table} (uid, case_id, volume_id, slice_index, original, image, sha256, original_name,
            format, original_mode, file_size, width, height, colour_saturation, source_label, source_label_origin,
            status, status_detail, status_changed_at, analysis_attempts, uploaded_at,
            current_class, current_urgency, current_urgent, review_stage, review_label)
        SELECT md5('vb{run}-' || v || '-' || k)::uuid, {int(first_case)} + v, {int(first_volume)} + v, k, '',
               'scans/image/synthetic.png', md5('vc{run}' || v || '-' || k) || md5('vd{run}' || v || '-' || k),
               'bscan-' || k || '.png', 'PNG', 'L', 50000, 512, 496, 0, '', '', 'analysed', '',
               at, 1, at, cls, {_urgency_sql('cls')}, {_urgency_sql('cls')} = 'urgent',
               st, CASE WHEN st = 'verified' THEN {vol_class} ELSE '' END
        FROM (SELECT v, k, timestamp '2025-06-01' + v * interval '60 seconds' AS at, {slice_class} AS cls, {vol_stage} AS st
              FROM generate_series(0, {int(volumes)} - 1) v, generate_series(0, {int(slices)} - 1) k) n"""
    )
    cur.execute(
        f"""INSERT INTO {Prediction._meta.db_table} (scan_id, model_version_id, p_cnv, p_dme, p_drusen,
            p_normal, predicted, confidence, urgency, oct_score, gate_passed, heatmap, inference_ms,
            quality_score, low_confidence, quality, created_at)
        SELECT id, {int(version)}, 0.1, 0.1, 0.1, 0.1, current_class, 0.7, current_urgency, 0.97, true, '', 8.5,
               0.2, false, '{{}}'::jsonb, uploaded_at + interval '1 second'
        FROM {scan_table} WHERE id > {int(before)}"""
    )
    numbered = f"SELECT id, id - {int(first_volume)} AS v, uploaded_at FROM {volume_table} WHERE id >= {int(first_volume)}"
    cur.execute(
        f"""INSERT INTO {Review._meta.db_table} (volume_id, stage, required_grades, final_label,
            verified_by_id, verified_at, exclusion_reason, created_at, stage_changed_at, reference_pick)
        SELECT id, st, 2, CASE WHEN st = 'verified' THEN cls ELSE '' END,
               CASE WHEN st = 'verified' THEN {int(t3)} END, CASE WHEN st = 'verified' THEN uploaded_at END,
               CASE WHEN st = 'excluded' THEN 'severe_artifact' ELSE '' END, uploaded_at, uploaded_at, false
        FROM (SELECT id, uploaded_at, {vol_stage} AS st, {vol_class} AS cls FROM ({numbered}) n) r"""
    )
    cols = f"volume_id, {GRADE_COLUMNS}"
    staged = (f"SELECT r.volume_id, r.stage, r.final_label, v.uploaded_at FROM {Review._meta.db_table} r "
              f"JOIN {volume_table} v ON v.id = r.volume_id WHERE v.id >= {int(first_volume)}")
    key = f"'[{int(slices) // 2}]'::jsonb"
    cur.execute(
        f"""INSERT INTO {Grade._meta.db_table} ({cols})
        SELECT volume_id, 1, {int(t1)}, uploaded_at, 9000, '', stage <> 'excluded',
               CASE WHEN stage = 'excluded' THEN 'severe_artifact' ELSE '' END, '', NULL, NULL, NULL, NULL, NULL, '',
               '[]'::jsonb
        FROM ({staged}) x WHERE stage <> 'quality_control'"""
    )
    for grader, stages in ((t2a, "('grading', 'verification', 'arbitration', 'verified')"),
                           (t2b, "('verification', 'arbitration', 'verified')")):
        label = "'DME'" if grader == t2b else "'CNV'"
        cur.execute(
            f"""INSERT INTO {Grade._meta.db_table} ({cols})
            SELECT volume_id, 2, {int(grader)}, uploaded_at, 30000, '', NULL, '',
                   CASE WHEN stage = 'arbitration' THEN {label} ELSE 'CNV' END, true, false, false, false, 4, '', {key}
            FROM ({staged}) x WHERE stage IN {stages}"""
        )
    cur.execute(
        f"""INSERT INTO {Grade._meta.db_table} ({cols})
        SELECT volume_id, 3, {int(t3)}, uploaded_at, 20000, '', NULL, '', final_label, NULL, NULL, NULL, NULL, NULL, '',
               '[]'::jsonb
        FROM ({staged}) x WHERE stage = 'verified'"""
    )
