"""tui.chat: which text a chat turn sends over a persistent context (no model needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tui.chat import Conversation, TurnOutcome, context_after, plan_turn, record_failure, record_turn

EOS = "<|im_end|>"


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}{EOS}\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def trimming(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """A template that strips message content, as some models' templates do."""
    return chatml([{**m, "content": m["content"].strip()} for m in messages], add_generation_prompt)


def outcome(plan, reply: str, reason: str = "stop", *, kept: bool = True) -> TurnOutcome:
    """The numbers the engine reports; a word counts as a token here."""
    prompt_tokens = len(plan.prompt.split())
    generated = len(reply.split()) + (reason == "stop")
    context = plan.base_tokens + prompt_tokens + generated if kept else plan.base_tokens
    return TurnOutcome(reply, reason, plan.base_tokens, prompt_tokens, generated if kept else 0,
                       context, reason == "stop")


def test_first_turn_sends_the_whole_template_fresh():
    conversation = Conversation(system="Be brief.")
    plan = plan_turn(conversation, "Hi", chatml)
    assert plan.continues is False
    assert plan.prompt == chatml([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi"}], True)


def test_second_turn_sends_only_the_new_part():
    conversation = Conversation(system="Be brief.")
    first = plan_turn(conversation, "Hi", chatml)
    record_turn(conversation, first, outcome(first, "Hello."), EOS)
    assert conversation.context_text == first.prompt + "Hello." + EOS

    second = plan_turn(conversation, "Bye", chatml)
    assert second.continues is True
    assert second.prompt == "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    assert conversation.context_text + second.prompt == chatml(
        conversation.template_messages() + [{"role": "user", "content": "Bye"}], True)


def test_reply_cut_at_max_tokens_is_closed_by_the_next_prompt():
    conversation = Conversation()
    first = plan_turn(conversation, "Count", chatml)
    record_turn(conversation, first, outcome(first, "one two", "length"), EOS)
    second = plan_turn(conversation, "More", chatml)
    assert second.continues is True
    assert second.prompt.startswith(EOS + "\n<|im_start|>user\nMore")


def test_template_that_rewrites_history_falls_back_to_a_fresh_context():
    conversation = Conversation()
    first = plan_turn(conversation, "Hi", trimming)
    record_turn(conversation, first, outcome(first, " Hello "), EOS)  # the template trims the reply
    second = plan_turn(conversation, "Again", trimming)
    assert second.continues is False
    assert second.prompt == trimming(conversation.template_messages() + [{"role": "user", "content": "Again"}], True)


def test_cancel_while_reading_the_prompt_keeps_the_old_context():
    conversation = Conversation()
    first = plan_turn(conversation, "Hi", chatml)
    record_turn(conversation, first, outcome(first, "Hello."), EOS)
    before = conversation.context_text
    second = plan_turn(conversation, "Long question", chatml)
    assert context_after(second, outcome(second, "", "cancelled", kept=False), EOS) == before


def test_unexpected_token_counts_start_the_next_turn_fresh():
    conversation = Conversation()
    first = plan_turn(conversation, "Hi", chatml)
    wrong = TurnOutcome("Hello.", "stop", 0, 5, 3, 99, True)
    record_turn(conversation, first, wrong, EOS)
    assert conversation.context_text is None
    assert plan_turn(conversation, "Again", chatml).continues is False


def test_failed_turn_leaves_no_messages():
    conversation = Conversation()
    first = plan_turn(conversation, "Hi", chatml)
    record_turn(conversation, first, outcome(first, "Hello."), EOS)
    second = plan_turn(conversation, "Fail", chatml)
    record_failure(conversation, second, context_tokens=second.base_tokens)
    assert [t.content for t in conversation.turns] == ["Hi", "Hello."]
    assert plan_turn(conversation, "Retry", chatml).continues is True
    record_failure(conversation, plan_turn(conversation, "Fail", chatml), context_tokens=0)
    assert plan_turn(conversation, "Retry", chatml).continues is False


words = st.text(alphabet="abc \n", min_size=1, max_size=12).filter(str.strip)


@given(st.lists(st.tuples(words, words, st.sampled_from(["stop", "length", "cancelled"])), min_size=1, max_size=5))
def test_context_plus_prompt_is_always_the_full_conversation(turns):
    """Whatever the turns, what the context holds plus what is sent equals the full template."""
    conversation = Conversation(system="sys")
    for user, reply, reason in turns:
        plan = plan_turn(conversation, user, chatml)
        full = chatml(conversation.template_messages() + [{"role": "user", "content": user}], True)
        assert plan.base_text + plan.prompt == full
        record_turn(conversation, plan, outcome(plan, reply, reason), EOS)
