"""Write docs/API.md from the docstrings and signatures of the installed rocmforge package.

    python scripts/api_docs.py            # rewrite docs/API.md
    python scripts/api_docs.py --check    # exit 1 if docs/API.md is out of date
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import rocmforge as rf

OUT = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def signature(obj, name: str) -> str:
    text = getattr(obj, "__text_signature__", None)
    if text:
        return name + text.replace("($self, /)", "()").replace("($self, ", "(").replace("($self)", "()").replace("$self, ", "")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    # Python functions: names and defaults, as the native ones show (the types are in the stubs)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return name + str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def render() -> str:
    out = ["# rocmforge API reference", "",
           "Generated from the docstrings by `python scripts/api_docs.py`; `help(rocmforge.X)` shows",
           "the same text. Shapes are NumPy order (last axis contiguous). See the README for a",
           "quickstart and `docs/ARCHITECTURE.md` for how the pieces fit.", ""]
    classes = [n for n in rf.__all__ if inspect.isclass(getattr(rf, n))
               and not issubclass(getattr(rf, n), BaseException)]
    functions = [n for n in rf.__all__ if inspect.isbuiltin(getattr(rf, n)) or inspect.isfunction(getattr(rf, n))]
    errors = [n for n in rf.__all__ if inspect.isclass(getattr(rf, n)) and issubclass(getattr(rf, n), BaseException)]

    for name in classes:
        cls = getattr(rf, name)
        out += [f"## `rocmforge.{name}`", "", doc(cls), ""]
        # methods, then properties, each by name (the native type's attribute order is not stable)
        members = sorted(vars(cls).items(), key=lambda kv: (inspect.isdatadescriptor(kv[1]), kv[0].startswith("_"), kv[0]))
        for attr, member in members:
            if attr.startswith("_") and attr not in ("__enter__", "__exit__", "__iter__", "__next__", "__len__"):
                continue
            if not doc(member):
                continue
            if inspect.isdatadescriptor(member):
                out += [f"### `{name}.{attr}` (property)", "", doc(member), ""]
            else:
                out += [f"### `{name}.{signature(member, attr)}`", "", doc(member), ""]
    out += ["## Functions", ""]
    for name in functions:
        f = getattr(rf, name)
        out += [f"### `rocmforge.{signature(f, name)}`", "", doc(f), ""]
    out += ["## `rocmforge.ops`", "", doc(rf.ops), ""]
    for name in rf.ops.__all__:
        f = getattr(rf.ops, name)
        out += [f"### `rocmforge.ops.{signature(f, name)}`", "", doc(f), ""]
    out += ["## Errors", ""]
    for name in errors:
        e = getattr(rf, name)
        bases = ", ".join(b.__name__ for b in e.__bases__)
        out += [f"### `rocmforge.{name}({bases})`", "", doc(e), ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
