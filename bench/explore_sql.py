"""EXPLAIN ANALYZE of the explore page's counts per category, before and after (PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/octscale1m .venv/bin/python bench/explore_sql.py [--plans]

For each case (a user and the page's filters) in one process, alternately: "before",
the three GROUP BY queries the page ran until issue 14 (over every scan the filters
match, reproduced here), and "after", the one statement of capped subqueries
(``verification.selectors.explore_count_querysets`` through
``octportal.paging.capped_counts_sql``, without parallel workers as ``capped_counts``
runs it). Prints each one's execution time as PostgreSQL
reports it (the median of ``--repeat`` runs after a warm-up) and the ratio after/before;
``--plans`` also prints the plans of the last run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.http import QueryDict  # noqa: E402

from cases.roles import Role  # noqa: E402
from octportal.paging import capped_counts_sql  # noqa: E402
from verification import selectors  # noqa: E402
from verification.filters import ExploreFilter  # noqa: E402

from pages import user  # noqa: E402  (bench/pages.py: the same bench users)


def before_sql(qs) -> list[tuple[str, list]]:
    """The three grouped queries of the previous ``explore_counts``."""
    seen = qs.filter(reading_visible=True).exclude(reading_predicted="").order_by()
    queries = [
        seen.values("reading_predicted").annotate(n=Count("id")).order_by("reading_predicted"),
        seen.values("reading_urgency").annotate(n=Count("id")).order_by("reading_urgency"),
        qs.order_by().values("review__stage").annotate(n=Count("id")).order_by("review__stage"),
    ]
    return [q.query.sql_with_params() for q in queries]


def explain(sql: str, params: list, *, serial: bool = False) -> tuple[float, str]:
    with transaction.atomic(), connection.cursor() as cur:
        if serial:  # as capped_counts runs it
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + sql, params)
        lines = [row[0] for row in cur.fetchall()]
    ms = next(float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time"))
    return ms, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plans", action="store_true")
    args = parser.parse_args()
    clinician = user("bench-clinician", Role.CLINICIAN)
    graded_t2 = get_user_model().objects.filter(username="scale-grader2a").first() or user("bench-t2a", Role.GRADER_T2)
    cases = [
        ("clinician, all scans", clinician, ""),
        ("clinician, urgent", clinician, "urgency=urgent"),
        ("clinician, DRUSEN in grading", clinician, "predicted=DRUSEN&stage=grading"),
        ("clinician, device contains", clinician, "device=spectralis"),
        ("tier 2, graded none (blinded)", user("bench-t2", Role.GRADER_T2), ""),
        ("tier 2, graded many", graded_t2, ""),
        ("tier 3, all scans", user("bench-t3", Role.GRADER_T3), ""),
    ]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: a shared machine gives noisy figures; compare ratios")
    print(f"{'case':32} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for name, who, query in cases:
        page_filter = ExploreFilter(QueryDict(query), queryset=selectors.explore_scans(user=who))
        if page_filter.filters_other_tables():
            print(f"{name:32} (the page counts among the first {selectors.EXPLORE_COUNT_SAMPLE:,} matches: bench/pages.py)")
            continue
        qs = page_filter.qs
        old = before_sql(qs)
        # The capped statement as the page builds it (views.explore).
        cells = selectors.explore_count_querysets(qs, user=who, filtered=page_filter.filters_copies())
        new = capped_counts_sql([c[3] for c in cells], cap=selectors.EXPLORE_COUNT_CAP)
        old_ms, new_ms = [], []
        for i in range(args.repeat + 1):
            runs = [explain(sql, params) for sql, params in old]
            after = explain(*new, serial=True)
            if i:
                old_ms.append(sum(ms for ms, _ in runs))
                new_ms.append(after[0])
        b, a = statistics.median(old_ms), statistics.median(new_ms)
        print(f"{name:32} {b:10.1f} {a:10.1f} {a / b:13.3f}")
        if args.plans:
            print("--- before\n" + "\n\n".join(plan for _, plan in runs) + "\n--- after\n" + after[1] + "\n")


if __name__ == "__main__":
    main()
