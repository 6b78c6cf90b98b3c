"""
tools.py: agentic RLVR in miniature. A calculator the policy may call while it thinks; the environment, not the
policy, writes the result, and the loss never trains on it.

The idea: in agentic RL (Qwen3-Coder, tool-using agents) the model acts in an environment and a checker scores the
outcome. Here the action is a calculator call written in plain text, in the style of GSM8K's annotations: while
thinking, the model writes `<<47*85=` and the environment appends `3995>>`; the model then goes on, and may call
again. No new tokens are needed. Three things make it RL with tools rather than text generation:
 1. The environment's tokens are forced tokens (sample.py's `force` rule, the mechanism a thinking budget uses):
    the policy did not choose them, so they get loss mask 0 and log-prob 0, in RL and in pretraining alike
    (data/tasks.tool_pieces says which tokens of a demonstration are the tool's).
 2. The calculator never evaluates model text: it reads the expression with the verifier's own bounded grammar
    (integers, + - * and parentheses, the same caps), and anything else, too long, or over a cap gets a fixed
    error result `?>>`, never an exception.
 3. The reward is unchanged: only the final answer is graded. A call pays only if it helps get the answer right;
    RL learns when calling pays.
How this differs from production agents: one tool, called inline and answered within the same decode loop (no
multi-turn protocol, no tool schema), and only during thinking by convention, not by rule.

Run: `python tools.py` calls the calculator on a few expressions, hostile ones included.
Shapes: B rows, t tokens so far.
"""
import time

from data.tokenizer import decode, encode
from data.tasks import tool_pieces
from verify import calculate

OPEN, EQUALS, CLOSE = "<<", "=", ">>"
ERROR = "?"           # the result of a call the calculator refuses
MAX_CALL_CHARS = 60   # an expression longer than this gets the error result (the grammar's caps are checked too)
EQUALS_ID = encode(EQUALS)[0]


def answer(expression):
    """What the environment appends to `<<expression=`: the value and `>>`, or `?>>`."""
    value = calculate(expression) if len(expression) <= MAX_CALL_CHARS else None
    return f"{ERROR if value is None else value}{CLOSE}"


def calculator(completions):
    """sample()'s force rule for the calculator: every row whose latest token closes an open call, `<<...=`, is
    handed the result. completions (B, t) long, the tokens so far (forced ones included)."""
    out = {}
    for r in (completions[:, -1] == EQUALS_ID).nonzero()[:, 0].tolist():  # few rows: most tokens are not "="
        text = decode(completions[r].tolist())
        start = text.rfind(OPEN)
        if start >= 0 and CLOSE not in text[start:]:
            out[r] = encode(answer(text[start + len(OPEN):-len(EQUALS)]))
    return out


def calls(text):
    """(calls, malformed calls) in a response: each `<<...=` the environment answered, and those answered `?`."""
    pieces = text.split(OPEN)[1:]
    answered = [p.split(EQUALS, 1)[1] for p in pieces if EQUALS in p]
    return len(answered), sum(a.startswith(ERROR + CLOSE) for a in answered)


if __name__ == "__main__":
    for e in ["47*85", "12*(3+4)-5", "-7*8", "2**10", "x*3", "__import__('os')", "9" * 50, "(" * 20 + "1" + ")" * 20,
              "1/2", "1e9"]:
        t0 = time.perf_counter()
        print(f"  <<{e[:40]}= -> {answer(e):12s} ({(time.perf_counter() - t0) * 1e6:.0f} us)")
    demo = "<think><<47*6=282>>\np=282</think><answer>282</answer>"
    print("a demonstration's pieces (True: the tool wrote it):", tool_pieces(demo))
