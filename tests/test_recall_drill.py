"""The lookup drill's batches and the offset-head initialisation it tests."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from lcopt.demo_model import TrainConfig, build_model, build_tokenizer

# tools/ is research code outside the package; load it by path
_spec = importlib.util.spec_from_file_location("recall_drill", Path(__file__).parents[1] / "tools" / "recall_drill.py")
drill = importlib.util.module_from_spec(_spec)
sys.modules["recall_drill"] = drill  # its dataclasses look their module up there
_spec.loader.exec_module(drill)


@pytest.mark.parametrize("fmt", drill.FORMATS)
def test_answers_are_the_asked_keys_values(fmt):
    cfg = drill.DrillConfig(format=fmt, batch_size=16, pairs=5, filler_sentences=3, questions=4)
    ids, mask = drill.make_batch(cfg, torch.Generator().manual_seed(1))
    assert (mask == 2).sum() == 16 and (mask == 1).sum() == 16 * 3
    for row, row_mask in zip(ids.tolist(), mask.tolist(), strict=True):
        # each key's value in the context, read off the fact sentences
        lo, n = drill.KEYS
        offset = {"value_after_is": 2, "value_at_question_offset": 4, "induction": 1}[fmt]
        value_of = {}
        for i, tok in enumerate(row):
            is_key = lo <= tok < lo + n and i + offset < len(row)
            if is_key and drill.VALUES[0] <= row[i + offset] < sum(drill.VALUES):
                value_of.setdefault(tok, row[i + offset])
        assert len(value_of) == 5
        for pos, m in enumerate(row_mask):
            if m:
                # the asked key sits at a fixed offset before the answer
                key = row[pos - (1 if fmt == "induction" else 5)]
                assert value_of[key] == row[pos]


def test_key_sits_as_far_before_the_value_as_before_the_answer():
    """The property that makes `value_at_question_offset` learnable: one fixed offset on both sides."""
    cfg = drill.DrillConfig(batch_size=1, pairs=1, filler_sentences=0, questions=1)
    ids, mask = drill.make_batch(cfg, torch.Generator().manual_seed(0))
    row = ids[0].tolist()
    answer_pos = mask[0].tolist().index(2)
    value_pos = row.index(row[answer_pos])  # the value's first occurrence, in the fact
    assert row[value_pos - 4] == row[answer_pos - 5]  # the key, 4 before the value / the answer position
    assert row[answer_pos - 1] == drill.ASSISTANT


def test_unknown_format():
    with pytest.raises(ValueError, match="allowed: value_after_is"):
        drill.make_batch(drill.DrillConfig(format="nope"), torch.Generator())


def test_offset_heads_attend_their_offset():
    model = build_model(build_tokenizer(), TrainConfig(offset_heads=2.0))
    model.config._attn_implementation = "eager"
    ids = torch.randint(10, model.config.vocab_size, (1, 400), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attn = model(input_ids=ids, output_attentions=True).attentions[0][0]
    argmax = attn[:, 20:].argmax(-1)
    positions = torch.arange(20, 400)
    for head in range(model.config.num_attention_heads):
        share = ((positions - argmax[head]) == head + 1).float().mean().item()
        assert share > 0.9, (head, share)


def test_offset_heads_share_one_value_output_map():
    model = drill.build(drill.DrillConfig(offset_heads=2.0, heads=4))
    attn = model.model.layers[0].self_attn
    hd = model.config.hidden_size // 4
    v, o = attn.v_proj.weight, attn.o_proj.weight
    for h in range(1, 4):
        assert torch.equal(v[h * hd : (h + 1) * hd], v[:hd])
        assert torch.equal(o[:, h * hd : (h + 1) * hd], o[:, :hd])
    # and the default leaves layer 0 as transformers initialises it
    plain = drill.build(drill.DrillConfig()).model.layers[0].self_attn
    assert not torch.equal(plain.v_proj.weight[hd : 2 * hd], plain.v_proj.weight[:hd])


def test_drill_runs_and_reports():
    history = drill.run(drill.DrillConfig(steps=4, every=2, batch_size=4, offset_heads=2.0), device="cpu")
    assert [s for s, _ in history] == [2, 4] and all(0 <= a <= 1 for _, a in history)
