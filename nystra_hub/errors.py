"""The package's own exceptions, at the bottom of the import graph: the models raise them too."""

from __future__ import annotations


class CheckpointError(ValueError):
    """The file cannot be read as a checkpoint (corrupt, wrong format, non-tensor entries, non-finite values)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes differ from the model's."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], mismatched: list[tuple]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [f"checkpoint {source} does not match the model:"]

        def listing(title: str, items: list[str]) -> None:
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
                parts.append(f"  {title} ({len(items)}): {shown}")

        listing("missing keys", missing)
        listing("unexpected keys", unexpected)
        listing(
            "mis-shaped keys",
            [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in mismatched],
        )
        super().__init__("\n".join(parts))
