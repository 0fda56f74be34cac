"""User actions that cross services, each in one place."""

__all__: list[str] = []
