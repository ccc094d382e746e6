"""The official `openai` Python client against `sandpiper serve` on the real
default models: what users' programs do, checked by result, not just status."""

import asyncio
import base64
import math
import struct

import openai
import pytest

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def counts(usage):
    """Token counts without `prompt_tokens_details`: how many prompt tokens an earlier
    request's KV cache supplied differs between otherwise identical requests."""
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def test_models_list_and_retrieve(client):
    models = {m.id: m for m in client.models.list()}
    assert CHAT in models and EMBED in models
    assert models[CHAT].object == "model"
    assert models[CHAT].model_extra["kind"] == "chat"
    assert models[EMBED].model_extra["kind"] == "embedding"
    assert client.models.retrieve(CHAT).id == CHAT
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_sync_and_streaming_agree(client):
    reply = client.chat.completions.create(model=CHAT, messages=PARIS, temperature=0, max_tokens=40)
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = client.chat.completions.create(
        model=CHAT, messages=PARIS, temperature=0, max_tokens=40,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    # The same prompt again: the server reused the first request's prompt cache
    # (kept as soon as it was computed) for all but its last token, and the SDK
    # reports it.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == reply.usage.prompt_tokens - 1


def test_chat_async(async_client):
    async def run():
        reply = await async_client.chat.completions.create(
            model=CHAT, messages=PARIS, temperature=0, max_tokens=40)
        pieces = []
        stream = await async_client.chat.completions.create(
            model=CHAT, messages=PARIS, temperature=0, max_tokens=40, stream=True)
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
        return reply.choices[0].message.content, "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert "Paris" in whole
    assert whole == streamed


def test_roles_parts_stop_and_seed(client):
    messages = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"},
                                     {"type": "text", "text": "Answer in one sentence."}]},
    ]
    reply = client.chat.completions.create(
        model=CHAT, messages=messages, temperature=0, max_tokens=40, stop=["Paris", "Lyon"])
    assert "Paris" not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"

    kwargs = dict(model=CHAT, messages=[{"role": "user", "content": "Write a haiku about rain."}],
                  temperature=1.0, top_p=0.9, seed=7, max_tokens=20)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second

    short = client.chat.completions.create(model=CHAT, messages=PARIS, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2


def test_logprobs_parse(client):
    reply = client.chat.completions.create(
        model=CHAT, messages=PARIS, temperature=0, max_tokens=20, logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0
        assert bytes(t.bytes).decode() == t.token
        assert len(t.top_logprobs) == 3
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert t.top_logprobs[0].token == t.token  # greedy
    plain = client.chat.completions.create(model=CHAT, messages=PARIS, temperature=0, max_tokens=20)
    assert plain.choices[0].logprobs is None

    stream = client.chat.completions.create(
        model=CHAT, messages=PARIS, temperature=0, max_tokens=20, logprobs=True, top_logprobs=3,
        stream=True)
    streamed = [t for c in stream if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=PARIS, top_logprobs=2)
    assert e.value.param == "top_logprobs"


def test_logit_bias_and_penalties(client):
    eos = "2"  # <|im_end|> in SmolLM2's vocabulary
    # Banning the end-of-turn token makes the model write until max_tokens.
    banned = client.chat.completions.create(
        model=CHAT, messages=PARIS, temperature=0, max_tokens=60, logit_bias={eos: -100})
    assert banned.choices[0].finish_reason == "length"
    assert banned.usage.completion_tokens == 60
    # Forcing it ends the answer at once.
    forced = client.chat.completions.create(
        model=CHAT, messages=PARIS, temperature=0, max_tokens=20, logit_bias={eos: 100})
    assert forced.choices[0].message.content == ""
    assert forced.choices[0].finish_reason == "stop"

    repeat = [{"role": "user", "content": "List the word apple over and over."}]
    plain = client.chat.completions.create(model=CHAT, messages=repeat, temperature=0, max_tokens=40)
    penalised = client.chat.completions.create(
        model=CHAT, messages=repeat, temperature=0, max_tokens=40, frequency_penalty=2.0)
    count = lambda r: r.choices[0].message.content.lower().count("apple")
    assert count(penalised) * 2 <= count(plain)

    for kwargs in [dict(frequency_penalty=3), dict(logit_bias={"x": 1}), dict(logit_bias={"2": 101}),
                   dict(tool_choice="required"), dict(functions=[{"name": "f"}])]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=CHAT, messages=PARIS, **kwargs)
        assert e.value.param == next(iter(kwargs))


def test_chat_n_choices(client):
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    args = dict(model=CHAT, messages=poem, temperature=1, seed=7, max_tokens=16, n=3)
    reply = client.chat.completions.create(**args)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) > 1
    again = client.chat.completions.create(**args)
    assert [c.message.content for c in again.choices] == texts
    assert counts(again.usage) == counts(reply.usage)

    streamed = ["", "", ""]
    finishes = [None, None, None]
    for chunk in client.chat.completions.create(**args, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert streamed == texts
    assert finishes == [c.finish_reason for c in reply.choices]

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=PARIS, n=9)
    assert e.value.param == "n"


def test_chat_errors_are_typed(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=PARIS)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=PARIS, max_tokens=-1)
    assert e.value.param == "max_tokens"


def test_wrong_api_key_is_rejected(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings(client):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    result = client.embeddings.create(model=EMBED, input=texts)
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0

    raw = client.embeddings.with_raw_response.create(model=EMBED, input=texts[0], encoding_format="base64")
    packed = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{384}f", base64.b64decode(packed))
    assert max(abs(x - y) for x, y in zip(decoded, vectors[0])) < 1e-6

    # The client's default (base64 on the wire, decoded by the client) gives the same vector.
    default = client.embeddings.create(model=EMBED, input=texts[0]).data[0].embedding
    assert max(abs(x - y) for x, y in zip(default, vectors[0])) < 1e-6
