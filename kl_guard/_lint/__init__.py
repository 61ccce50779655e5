"""The static linter: ``python -m kl_guard lint``, the runtime's diagnoses read from source.

Standard library only (``ast``, ``json``): nothing here imports torch. Stages,
one module each, data flowing one way: ``_files`` (paths and notebooks to
documents) -> ``_binder`` (each name's bindings, in ``_scopes``) -> ``_names``
(what a name resolves to) -> ``_spaces`` (which values are visibly
probabilities or log-probabilities) -> ``_rules`` (calls to findings) ->
``_fixes`` (findings to edits) -> ``_output`` (findings to text, JSON, SARIF
or annotations); ``_command`` runs them for the CLI.
"""

from __future__ import annotations

from kl_guard._lint._command import LintOptions, lint_document, run

__all__ = ["LintOptions", "lint_document", "run"]
