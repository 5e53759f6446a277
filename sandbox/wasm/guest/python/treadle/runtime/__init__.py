"""The guest's part of ``treadle.runtime``: the build copies the SDK's ``errors``,
``_durations`` and ``_entrypoint`` modules next to this file, unchanged."""
