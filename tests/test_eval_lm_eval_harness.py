import pytest
import torch

from eval.lm_eval_harness import LitScorer, write_mmlu_local_tasks
from tests.test_eval_backends import ByteTokenizer, tiny_backend


def scorer(batch_size=3):
    b = tiny_backend(1)
    tok = ByteTokenizer()
    tok.eos_id = 0
    return LitScorer(b.model, tok, batch_size=batch_size)


def direct(s, ctx_ids, cont_ids):
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(s.model(ids)[0].float(), -1)
    picked = [logp[len(ctx_ids) - 1 + i, t] for i, t in enumerate(cont_ids)]
    greedy = all(int(logp[len(ctx_ids) - 1 + i].argmax()) == t for i, t in enumerate(cont_ids))
    return float(sum(picked)), greedy


def test_loglikelihood_equals_direct_forward():
    s = scorer()
    pairs = [("Question: 1+1=\nAnswer:", " A"), ("Question: 1+1=\nAnswer:", " B"), ("The cat sat on the ", "mat"),
             ("short", " and a longer continuation"), ("", "no context")]
    got = s.loglikelihood(pairs)
    for (ctx, cont), (lp, greedy) in zip(pairs, got):
        if ctx:
            # lm-eval moves the context's trailing spaces to the continuation
            n = len(ctx) - len(ctx.rstrip())
            ctx, cont = ctx[: len(ctx) - n], ctx[len(ctx) - n:] + cont
            ctx_ids = list(ctx.encode())
        else:
            ctx_ids = [0]  # the EOS id stands in for an empty context
        want_lp, want_greedy = direct(s, ctx_ids, list(cont.encode()))
        assert lp == pytest.approx(want_lp, abs=1e-4) and greedy == want_greedy


def test_loglikelihood_rolling_and_generate():
    s = scorer()
    text = "hello world, this is a rolling test"
    [lp] = s.loglikelihood_rolling([text])
    want, _ = direct(s, [0], list(text.encode()))
    assert lp == pytest.approx(want, abs=1e-4)
    s.max_length = 8  # several windows
    [lp_windows] = s.loglikelihood_rolling([text])
    assert lp_windows < 0
    [out] = s.generate_until([("abc", {"until": ["zzz"], "max_gen_toks": 5})])
    assert len(out) <= 5  # at most 5 byte tokens, one character each


def test_lm_class_wraps_scorer():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from eval.lm_eval_harness import make_lm_class

    s = scorer()
    lm = make_lm_class()(scorer=s)
    reqs = [Instance("loglikelihood", {}, ("ab", "c"), 0)]
    assert lm.loglikelihood(reqs) == s.loglikelihood([("ab", "c")])


def test_mmlu_local_tasks(shared_data, tmp_path):
    yaml = pytest.importorskip("yaml")
    group = write_mmlu_local_tasks(shared_data, tmp_path, ["philosophy"])
    cfg = yaml.safe_load((tmp_path / "mmlu_local_philosophy.yaml").read_text())
    assert group == "mmlu_local" and cfg["output_type"] == "multiple_choice"
    rows = (tmp_path / "philosophy_test.jsonl").read_text().splitlines()
    assert len(rows) == 311
