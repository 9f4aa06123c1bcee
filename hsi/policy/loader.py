"""Loading a policy from YAML: every error found is reported at once, each with the file, the line and the
dotted path of the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hsi.policy.base import PolicyError
from hsi.policy.checks import cross_checks
from hsi.policy.schema import Policy, nearest_line


class _LineLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            child = path + (str(k.value),)
            out[child] = k.start_mark.line + 1
            _line_map(v, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            child = path + (str(i),)
            out[child] = v.start_mark.line + 1
            _line_map(v, child, out)


def _pydantic_problems(err: ValidationError, lines: dict[tuple[str, ...], int], name: str) -> list[str]:
    problems = []
    for e in err.errors():
        # Discriminated unions put the variant tag ("he", "plain") in the path; drop it.
        loc = tuple(str(p) for p in e["loc"] if p not in ("plain", "he", "mpc", "tee"))
        line = nearest_line(lines, loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown zone kind {e.get('input', {}).get('kind')!r}; expected one of plain, he, mpc, tee"
        elif e["type"] == "union_tag_not_found":
            msg = "zone has no 'kind' (one of plain, he, mpc, tee)"
        problems.append(f"{name}:{line} {'.'.join(loc) or '<root>'}: {msg}")
    return problems


def load_policy_text(text: str, source: str = "<memory>") -> Policy:
    """A Policy from YAML text; PolicyError listing every problem with file:line and key path."""
    name = Path(source).name
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise PolicyError(source, [f"{name}{line}: not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(source, [f"{name}:1: a policy is a YAML mapping, got {type(data).__name__}"])
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(source, _pydantic_problems(e, lines, name)) from None
    policy._source = source
    policy._lines = lines
    problems = cross_checks(policy)
    if problems:
        raise PolicyError(source, problems)
    return policy


def load_policy(path: str | Path) -> Policy:
    """A Policy from a YAML file; PolicyError naming every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PolicyError(str(path), [f"cannot read policy file: {e.strerror}"]) from None
    return load_policy_text(text, str(p))


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy format."""
    return Policy.model_json_schema()
