"""HELM's MATH answer equivalence, re-implemented from helm/benchmark/scenarios/math_scenario.py (which took it from
hendrycks/math): the last `\\boxed{...}` (or `\\fbox{...}`) of each solution is the answer, both answers are
normalized (line breaks, `\\!`, `tfrac`/`dfrac`, `\\left`/`\\right`, degrees, `\\$`, units after `\\text{ `, `\\%`,
leading zeros of decimals, a short `x =` prefix, `\\sqrt3`, spaces, `\\frac12`, `0.5`, `a/b`) and compared as strings.

HELM's quirks are kept, since the challenge's scores were computed with them: two missing answers are equivalent
(1.0), `\\fbox{...}` is found but never unboxed (no answer), and where the normalization fails (two `\\text{ ` units,
a `\\frac` or `\\sqrt` with nothing after it) the raw answers are compared instead.
"""

from __future__ import annotations

from typing import Optional


class _Unnormalizable(Exception):
    """Where HELM's normalization raises (an assert, an index past the end) and HELM falls back to raw strings."""


def last_boxed_only_string(text: str) -> Optional[str]:
    """The last `\\boxed...{...}` (else `\\fbox...{...}`) with its balanced braces; None if it never closes."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:  # only a closing brace can end it, as in HELM
                return text[start : i + 1]
    return None


def remove_boxed(boxed: str) -> Optional[str]:
    left = "\\boxed{"
    if boxed.startswith(left) and boxed.endswith("}"):
        return boxed[len(left) : -1]
    return None  # "\\boxed 5", "\\fbox{5}": HELM gives no answer


def get_answer(solution: Optional[str]) -> Optional[str]:
    if solution is None:
        return None
    boxed = last_boxed_only_string(solution)
    return None if boxed is None else remove_boxed(boxed)


def _fix_fracs(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1b` -> `\\frac{1}{b}`, `\\frac1{72}` -> `\\frac{1}{72}`."""
    head, *rest = text.split("\\frac")
    out = head
    for part in rest:
        out += "\\frac"
        if not part:
            raise _Unnormalizable(text)
        if part[0] == "{":
            out += part
        elif len(part) < 2:
            return text  # HELM gives up on the whole string, unchanged
        elif part[1] != "{":
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
        else:
            out += "{" + part[0] + "}" + part[1:]
    return out


def _fix_a_slash_b(text: str) -> str:
    """`2/3` -> `\\frac{2}{3}`, only for two plain integers."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    if text != f"{a}/{b}":  # "02/3", "+2/3", "1_0/3": int() reads them, HELM's round trip rejects them
        return text
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(text: str) -> str:
    """Everything before `\\text{ ` (with its space: in MATH's answers that only ever introduces a unit)."""
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise _Unnormalizable(text)
    return parts[0]


def _fix_sqrt(text: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}` (one character)."""
    head, *rest = text.split("\\sqrt")
    out = head
    for part in rest:
        if not part:
            raise _Unnormalizable(text)
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])
    return out


def strip_string(text: str) -> str:
    """HELM's `_strip_string`: the normalization applied to both answers, in HELM's order."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        text = text.replace(old, new)
    text = _remove_right_units(text)
    # HELM removes "\\%" twice (a removal can leave a new one: "\\\\%%" -> "\\%")
    text = text.replace("\\%", "").replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5", "x=5" -> "5"
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def is_equiv(a: Optional[str], b: Optional[str]) -> float:
    """HELM's `math_equiv` on two extracted answers."""
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    try:
        return float(strip_string(a) == strip_string(b))
    except _Unnormalizable:
        return float(a == b)


def is_equiv_chain_of_thought(gold_solution: str, completion: str) -> float:
    """HELM's `math_equiv_chain_of_thought`: the boxed answers of the reference solution and of the completion."""
    return is_equiv(get_answer(gold_solution), get_answer(completion))
