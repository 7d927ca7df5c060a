"""The `synthetic` model's words, the same sequence agentstream sends."""

WORDS = [
    " the", " stream", " token", " agent", " model", " answer", " fast", " data", " server",
    " client", " time", " first", " open", " call", " chunk", " flow", " and", " of", " to", " in",
    " is", " a", " for", " with", " we", " it", " on", " that", " each", " new", " over", ".",
]


def word(index: int) -> str:
    """The index-th synthetic token (same 64-bit hash as src/llm/mock.rs)."""
    mixed = ((index ^ 0x9E3779B9) * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF
    return WORDS[(mixed >> 59) % len(WORDS)]
