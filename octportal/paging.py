"""Paging of long lists whose exact size would cost more than the page itself.

Counting a million rows (for "page 1 of 20,000") takes longer than fetching the 50
shown. ``CappedPaginator`` counts up to ``cap`` rows and says "1,000+" beyond; pages
past the cap are still reached by "next". ``page_annotated`` adds expensive per-row
annotations to the rows of one page only, after the page has been cut.
``capped_counts`` counts several querysets up to a cap each, in one SQL statement.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connections, transaction
from django.db.models import QuerySet


class CappedPaginator(Paginator):
    """A paginator whose count stops at ``cap`` (+1, to know that there are more)."""

    cap = 1000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.cap + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.cap

    @property
    def count_label(self) -> str:
        return f"{self.cap:,}+" if self.capped else f"{self.count:,}"

    @property
    def num_pages_label(self) -> str:
        return f"{self.num_pages:,}+" if self.capped else f"{self.num_pages:,}"

    def validate_number(self, number: Any) -> int:
        # Beyond the cap there may be more pages than the count shows.
        try:
            return super().validate_number(number)
        except EmptyPage:
            if self.capped:
                return int(number)
            raise

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if not self.capped:
            return super().page(number)
        # The count says nothing past the cap: fetch one row more than a page to know
        # whether another page follows (a plain Paginator would cut the page at the count).
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        return CappedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class CappedPage(Page):
    """A page past what a ``CappedPaginator`` counted: it knows whether a next page exists."""

    def __init__(self, object_list: Any, number: int, paginator: Paginator, *, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more

    def next_page_number(self) -> int:
        if not self.more:
            raise EmptyPage("That page contains no results")
        return self.number + 1

    def end_index(self) -> int:
        return self.start_index() + len(self.object_list) - 1 if self.object_list else 0


def page_annotated(page: Page, annotate: Callable[[QuerySet], QuerySet]) -> Page:
    """Replace the page's rows by the same rows with ``annotate`` applied, in page order."""
    rows = list(page.object_list)
    if not rows:
        return page
    model = type(rows[0])
    by_pk = {obj.pk: obj for obj in annotate(model.objects.filter(pk__in=[r.pk for r in rows]))}
    page.object_list = [by_pk[r.pk] for r in rows]
    return page


def capped_counts(querysets: Sequence[QuerySet], *, cap: int) -> list[int]:
    """The number of rows of each queryset, counting at most ``cap`` + 1 of each (so that
    "more than ``cap``" shows), in one statement (``capped_counts_sql``). Each subquery is
    planned on its own and stops at its limit, so the cost is bounded by the cap, not by
    the table. All querysets use the first one's database."""
    if not querysets:
        return []
    sql, params = capped_counts_sql(querysets, cap=cap)
    alias = querysets[0].db
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        if connections[alias].vendor == "postgresql":
            # A count that stops after cap rows never gains from parallel workers; starting
            # them (even for a branch the planner knows is empty) costs more than the count.
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(sql, params)
        return [int(n) for n in cursor.fetchone()]


def capped_counts_sql(querysets: Sequence[QuerySet], *, cap: int) -> tuple[str, list[Any]]:
    """``SELECT (SELECT count(*) FROM (<queryset's ids> LIMIT cap + 1)), ...`` and its parameters."""
    parts, params = [], []
    for i, qs in enumerate(querysets):
        sql, p = qs.order_by().values("pk")[: cap + 1].query.sql_with_params()
        parts.append(f"(SELECT count(*) FROM ({sql}) AS capped_{i})")
        params.extend(p)
    return "SELECT " + ", ".join(parts), params
