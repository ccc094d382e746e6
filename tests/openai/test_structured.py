"""Structured output through the official client: JSON-schema responses
validate, forced tool calls parse, the model's own tool-call format is
recognised, streamed tool calls assemble to the same call."""

import asyncio
import json

import jsonschema
import pydantic
import pytest

MODEL = "smollm2-135m-instruct"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def test_json_schema_validates_whatever_the_prompt(client):
    r = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        # Room for every whitespace slot the grammar allows (a line break and
        # up to 20 spaces of indentation after `{`, `[` and `,`), which a model
        # that wanted prose may fill: the answer must not depend on the exact
        # greedy path.
        max_tokens=300,
        # Prose is what this prompt would get without the constraint.
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": PERSON},
        },
    )
    text = r.choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)
    assert r.choices[0].finish_reason == "stop"


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int


def test_parse_with_a_pydantic_model(client):
    # The client's own structured-output helper: it sends the model's strict
    # JSON schema and parses the reply into the class.
    r = client.chat.completions.parse(
        model=MODEL,
        temperature=0,
        max_tokens=60,
        messages=[{"role": "user", "content": "Tell me about Paris as JSON."}],
        response_format=City,
    )
    city = r.choices[0].message.parsed
    assert isinstance(city, City)
    assert city.name


def test_json_object_async_streaming(async_client):
    async def run():
        stream = await async_client.chat.completions.create(
            model=MODEL,
            temperature=0,
            max_tokens=80,
            stream=True,
            messages=[
                {"role": "user", "content": "Describe a cat as a JSON object with the keys name, color and age."}
            ],
            response_format={"type": "json_object"},
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    assert isinstance(json.loads(asyncio.run(run())), dict)


def _check_weather(call):
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    return args


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_whole_and_streamed(client, choice):
    kwargs = dict(
        model=MODEL,
        temperature=0,
        max_tokens=60,
        messages=[{"role": "user", "content": "Do I need an umbrella in Berlin?"}],
        tools=[WEATHER],
        tool_choice=choice,
    )
    r = client.chat.completions.create(**kwargs)
    choice0 = r.choices[0]
    assert choice0.finish_reason == "tool_calls"
    assert choice0.message.content is None
    assert len(choice0.message.tool_calls) == 1
    args = _check_weather(choice0.message.tool_calls[0])

    # Streamed: the client accumulates tool-call deltas into the same call.
    with client.chat.completions.stream(**kwargs) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert _check_weather(streamed.message.tool_calls[0]) == args


def test_auto_recognises_the_models_own_call_and_a_tool_round_trip(client):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "user", "content": "What is the weather in London?"},
    ]
    r = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=60, messages=messages, tools=[tool])
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"city": "London"}

    # The result goes back as a `tool` message; the conversation continues.
    messages += [
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 14, "sky": "rain"}'},
    ]
    r = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=40, messages=messages, tools=[tool], tool_choice="none"
    )
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content


def test_unenforceable_schema_is_refused_by_name(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a+$"}},
            },
        )
    assert e.value.body["param"] == "response_format.json_schema.schema"
    assert "pattern" in e.value.body["message"]
