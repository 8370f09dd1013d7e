"""What a write did, one type for every family's writer: rows inserted, updated, deleted and
left alone (a re-run that finds the same data only counts ``unchanged``)."""

from dataclasses import dataclass, field


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    #: The same counts per table, for writers that write several (``{table: {kind: n}}``).
    by_table: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: "WriteCounts") -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        for table, counts in other.by_table.items():
            mine = self.by_table.setdefault(table, {})
            for kind, n in counts.items():
                mine[kind] = mine.get(kind, 0) + n

    def as_dict(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
        }
