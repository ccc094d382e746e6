"""The legacy Completions API (`client.completions.create`) with the official
`openai` client against `sandpiper serve` on the real default chat model:
raw prompts, prompt lists and token prompts, `n`, `echo`, `stop`, legacy
`logprobs`, seeds, streaming (sync and async) and the refusals."""

import asyncio

import openai
import pytest

CHAT = "smollm2-135m-instruct"
PROMPT = "The capital of France is"
GREEDY = dict(model=CHAT, prompt=PROMPT, temperature=0, max_tokens=10)


def counts(usage):
    """Token counts without `prompt_tokens_details` (see test_openai_client.counts)."""
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def check_usage(reply):
    u = reply.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    return u


def test_sync_and_streaming_agree(client):
    reply = client.completions.create(**GREEDY)
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    assert reply.model == CHAT
    [choice] = reply.choices
    assert choice.index == 0 and choice.text and choice.logprobs is None
    assert choice.finish_reason in ("stop", "length")
    usage = check_usage(reply)
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 10

    chunks = list(client.completions.create(
        **GREEDY, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].choices == [] and counts(chunks[-1].usage) == counts(reply.usage)


def test_async_whole_and_streamed(async_client):
    async def run():
        reply = await async_client.completions.create(**GREEDY)
        pieces = []
        async for chunk in await async_client.completions.create(**GREEDY, stream=True):
            pieces.append(chunk.choices[0].text)
        return reply.choices[0].text, "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert whole and whole == streamed


def test_token_prompts_and_exact_usage(client):
    # Token ids are used as they are: the prompt counts exactly those tokens,
    # and their text completes identically (no template, no BOS either way).
    text = client.completions.create(**GREEDY)
    ids = [504, 3575, 282, 4649, 314]  # "The capital of France is" in SmolLM2's vocabulary
    by_ids = client.completions.create(**{**GREEDY, "prompt": ids})
    assert by_ids.usage.prompt_tokens == len(ids)
    assert text.usage.prompt_tokens == len(ids)
    assert by_ids.choices[0].text == text.choices[0].text
    two = client.completions.create(**{**GREEDY, "prompt": [ids, ids[:3]]})
    assert two.usage.prompt_tokens == len(ids) + 3
    assert two.choices[0].text == text.choices[0].text
    assert two.usage.completion_tokens == sum(
        client.completions.create(**{**GREEDY, "prompt": p}).usage.completion_tokens
        for p in (ids, ids[:3]))


def test_prompt_lists_n_and_seed(client):
    prompts = ["Once upon a time", "The best thing about the sea is"]
    args = dict(model=CHAT, temperature=1, seed=5, max_tokens=12, n=2)
    reply = client.completions.create(prompt=prompts, **args)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    texts = [c.text for c in reply.choices]
    # Prompt-major: choices 2i and 2i+1 are prompt i's, as it completes alone.
    for i, prompt in enumerate(prompts):
        alone = client.completions.create(prompt=prompt, **args)
        assert [c.text for c in alone.choices] == texts[2 * i:2 * i + 2]
    assert len(set(texts)) > 1
    # A seed reproduces the whole response.
    again = client.completions.create(prompt=prompts, **args)
    assert [c.text for c in again.choices] == texts
    assert counts(again.usage) == counts(reply.usage)
    check_usage(reply)

    streamed = [""] * 4
    for chunk in client.completions.create(prompt=prompts, stream=True, **args):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == texts


def test_echo_and_stop(client):
    plain = client.completions.create(**GREEDY).choices[0].text
    echoed = client.completions.create(**GREEDY, echo=True).choices[0].text
    assert echoed == PROMPT + plain
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        **GREEDY, echo=True, stream=True))
    assert streamed == echoed

    word = plain.split()[1]
    stopped = client.completions.create(**GREEDY, stop=[word, "###"])
    text = stopped.choices[0].text
    assert word not in text and plain.startswith(text)
    assert stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        **GREEDY, stop=word, stream=True))
    assert streamed == text


def test_logprobs_shape(client):
    reply = client.completions.create(**GREEDY, logprobs=2)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
    assert "".join(lp.tokens) == choice.text
    offset = 0
    for token, logprob, top, at in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset):
        assert at == offset
        offset += len(token)
        assert logprob <= 0
        assert 2 <= len(top) <= 3 and top[token] == logprob
        assert max(top.values()) == logprob  # greedy
    assert reply.choices[0].text == client.completions.create(**GREEDY).choices[0].text

    streamed = [c.choices[0].logprobs for c in client.completions.create(**GREEDY, logprobs=2, stream=True)
                if c.choices[0].logprobs]
    assert [t for s in streamed for t in s.tokens] == lp.tokens
    assert [o for s in streamed for o in s.text_offset] == lp.text_offset


def test_refusals_name_the_parameter(client):
    cases = [
        (dict(suffix=" and that is all."), "suffix", "unsupported_parameter"),
        (dict(best_of=3), "best_of", "unsupported_parameter"),
        (dict(echo=True, logprobs=1), "echo", "unsupported_parameter"),
        (dict(logprobs=6), "logprobs", "invalid_value"),
        (dict(max_tokens=8190), "prompt", "context_length_exceeded"),
        (dict(prompt=""), "prompt", "invalid_value"),
    ]
    for kwargs, param, code in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**{**GREEDY, **kwargs})
        assert (e.value.param, e.value.code) == (param, code), kwargs
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(**{**GREEDY, "model": "no-such-model"})
    assert e.value.code == "model_not_found"
    # Harmless values are accepted.
    reply = client.completions.create(**GREEDY, suffix="", best_of=1, user="u-1")
    assert reply.choices[0].text
