"""The course's own tooling (release, execution, notebook authoring, wrong-answer runs).

It lives beside the ``sccourse`` package, not inside it: it needs this checkout (``solutions/``, ``tests/mutations/``,
``nbgrader_config.py``), so it is never installed. ``tasks.py`` and the tests put ``lib/`` on the path.
"""
