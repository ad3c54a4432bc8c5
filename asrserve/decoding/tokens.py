"""Token table (``tokens.txt``) and BPE text assembly."""

from __future__ import annotations

from pathlib import Path

from asrserve.errors import ModelLoadError

WORD_START = "\u2581"  # ▁


class SymbolTable:
    """``tokens.txt`` in sherpa format: one ``piece id`` per line."""

    def __init__(self, id2sym: dict[int, str]) -> None:
        self.id2sym = id2sym
        self.sym2id = {s: i for i, s in id2sym.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> SymbolTable:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelLoadError(f"{p}: cannot read tokens ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{p}: tokens file is not UTF-8") from exc
        id2sym: dict[int, str] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 1 and parts[0].isdigit():
                # the piece is whitespace itself (e.g. a space token)
                parts = [" ", parts[0]]
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ModelLoadError(f"{p}:{lineno}: expected 'piece id', got {line!r}")
            token_id = int(parts[1])
            if token_id in id2sym:
                raise ModelLoadError(
                    f"{p}:{lineno}: id {token_id} given twice "
                    f"({id2sym[token_id]!r} and {parts[0]!r})"
                )
            id2sym[token_id] = parts[0]
        if not id2sym:
            raise ModelLoadError(f"{p}: no tokens")
        missing = sorted(set(range(len(id2sym))) - set(id2sym))
        if missing:
            raise ModelLoadError(
                f"{p}: ids must run from 0 to {len(id2sym) - 1} without gaps; "
                f"missing {', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}"
            )
        return cls(id2sym)

    def __len__(self) -> int:
        return len(self.id2sym)

    def __getitem__(self, token_id: int) -> str:
        return self.id2sym[token_id]

    def get_id(self, piece: str) -> int | None:
        return self.sym2id.get(piece)

    @property
    def unk_id(self) -> int:
        return self.sym2id.get("<unk>", -1)

    def piece(self, token_id: int) -> str:
        """The token as shown to users: a leading ``▁`` becomes a space."""
        sym = self.id2sym[token_id]
        if sym.startswith(WORD_START):
            return " " + sym[1:]
        return sym

    def decode(self, token_ids: list[int]) -> tuple[str, list[str]]:
        """Return ``(text, pieces)``; ``<unk>`` is dropped from both."""
        pieces = [self.piece(t) for t in token_ids if self.id2sym[t] != "<unk>"]
        return "".join(pieces), pieces
