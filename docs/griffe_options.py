"""Griffe extension: functions whose options are declared once get their real signature and docs.

``mihu_frames.options.takes`` gives a ``**options`` function the signature and docstring entries
of its options when the module is imported (the source holds ``**options`` and a ``<options>``
line). Griffe reads the source; for those functions (and classes) this extension imports the
object and takes its docstring and ``inspect.signature`` instead. Nothing else is imported, so no
module runs at documentation time that should not (``python -m`` entry points).
"""

from __future__ import annotations

import inspect
from typing import Any

import griffe

KINDS: dict[Any, Any] = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _annotation(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _parameters(obj: Any) -> griffe.Parameters:
    signature = inspect.signature(obj)
    return griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=_annotation(p.annotation),
                kind=KINDS[p.kind],
                default=None if p.default is inspect.Parameter.empty else repr(p.default),
            )
            for p in signature.parameters.values()
        )
    )


def _options_doc(obj: griffe.Object) -> bool:
    return bool(obj.docstring) and "<options>" in obj.docstring.value  # type: ignore[union-attr]


def _options_signature(func: griffe.Function) -> bool:
    return any(
        p.kind is griffe.ParameterKind.var_keyword and p.name == "options" for p in func.parameters
    )


class RuntimeOptions(griffe.Extension):
    """Take the imported object's docstring and signature where ``takes`` builds them."""

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        """Run once the tree is built: a function's (or method's) docstring and signature."""
        if _options_doc(func) or _options_signature(func):
            live = griffe.dynamic_import(func.path)
            if _options_doc(func):
                func.docstring.value = inspect.cleandoc(live.__doc__)  # type: ignore[union-attr]
            func.parameters = _parameters(live)

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """A class's docstring (its ``__init__`` carries the signature)."""
        if _options_doc(cls):
            live = griffe.dynamic_import(cls.path)
            cls.docstring.value = inspect.cleandoc(live.__doc__)  # type: ignore[union-attr]
