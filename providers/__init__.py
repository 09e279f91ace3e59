"""Providers shipped with jupiter-bus (installed as ``jupiter_providers``)."""

__all__: list[str] = []
