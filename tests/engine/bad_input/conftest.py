"""The corpus' plugin modules are loaded by the cases (``--plugin``), not collected as tests."""

collect_ignore_glob = ["plugins/*"]
