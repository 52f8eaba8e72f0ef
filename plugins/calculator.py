"""Calculator tool: arithmetic through an AST whitelist (no eval, bounded sizes).

Only number literals, + - * / // % **, unary signs, parentheses, a few math functions and
the constants pi and e are allowed. Exponents, integer sizes and factorials are bounded
before they are computed, so ``9**9**9**9`` is refused instantly instead of eating the CPU.
"""

from __future__ import annotations

import ast
import math
import operator

from assistant.hookspecs import hookimpl
from assistant.tools import ToolError

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 4096
MAX_EXPONENT = 10_000
MAX_DEPTH = 50

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan, "log": math.log,
          "log10": math.log10, "log2": math.log2, "exp": math.exp, "abs": abs, "round": round,
          "floor": math.floor, "ceil": math.ceil, "asin": math.asin, "acos": math.acos,
          "atan": math.atan, "factorial": math.factorial}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _check_size(v: float | int) -> float | int:
    if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
        raise ToolError(f"the result has more than {MAX_INT_BITS} bits; too large")
    if isinstance(v, float) and math.isinf(v):
        raise ToolError("the result overflows")
    return v


def _eval(node: ast.AST, depth: int = 0) -> float | int:
    if depth > MAX_DEPTH:
        raise ToolError("the expression is nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _check_size(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a = _eval(node.left, depth + 1)
        b = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            if abs(b) > MAX_EXPONENT:
                raise ToolError(f"exponent {b} is too large (limit {MAX_EXPONENT})")
            if isinstance(a, int) and isinstance(b, int) and b > 0 and a not in (0, 1, -1):
                if a.bit_length() * b > MAX_INT_BITS:
                    raise ToolError(f"{a}**{b} would have more than {MAX_INT_BITS} bits")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise ToolError("division by zero")
        try:
            return _check_size(_BINOPS[type(node.op)](a, b))
        except OverflowError:
            raise ToolError("the result overflows") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords and len(node.args) in (1, 2)):
        args = [_eval(a, depth + 1) for a in node.args]
        if node.func.id == "factorial" and (not isinstance(args[0], int) or not 0 <= args[0] <= 1000):
            raise ToolError("factorial takes an integer between 0 and 1000")
        try:
            return _check_size(_FUNCS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as err:
            raise ToolError(f"{node.func.id}: {err}") from None
    raise ToolError(f"not allowed in a calculation: {ast.dump(node)[:60]}"
                    if not isinstance(node, ast.Name) else f"unknown name {node.id!r}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. 2*(3+4) or sqrt(2)/3.

    expression: the arithmetic to evaluate
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if "\x00" in expression:
        raise ToolError("the expression contains a NUL byte")
    try:
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression!r} as arithmetic") from None
    value = _eval(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


@hookimpl
def register_tools(register):
    register(calculator)
