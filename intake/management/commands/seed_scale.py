"""manage.py seed_scale --scans 1000000 [--patients 50000] — a realistic volume of rows, by SQL.

For the scale benchmarks (bench/pages.py) only: PostgreSQL, synthetic rows, no image
files. Adds to what is there; run it on an empty database made for the purpose.

Per scan: one prediction of the active model version (class mix of a retina clinic,
2% refused by the input gate), one review in every stage, and the grades that stage
implies (tier 1 from QC on; two tier 2 grades from verification on, disagreeing in
arbitration; tier 3 for verified scans): 2.0 grades per scan.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from cases.diagnoses import URGENCY_BY_DIAGNOSIS
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from cases.models import Case, Patient, Scan
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

    def handle(self, *args, scans: int, patients: int | None, **options) -> None:
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
            grade_cols = (
                "scan_id, tier, grader_id, created_at, time_taken_ms, comment, accepted, exclusion_reason, label,"
                " finding_cnv, finding_macular_edema, finding_drusen, finding_other, confidence, reference_label, key_slices"
            )
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
        with connection.cursor() as cur:
            for model in (Patient, Case, Scan, Prediction, Review, Grade):
                cur.execute(f"ANALYZE {model._meta.db_table}")
        self.stdout.write(
            f"seeded {patients:,} patients, {n_cases:,} examinations, {scans:,} scans with readings and reviews, "
            f"{Grade.objects.filter(scan_id__gt=before).count():,} grades in {time.perf_counter() - started:.0f} s"
        )
