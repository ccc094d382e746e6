"""LangChain's `langchain-openai` (ChatOpenAI, OpenAIEmbeddings) against
`sandpiper serve` on the real default models: one other real client from the
ecosystem, checked by result."""

import math

from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from conftest import API_KEY

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
PARIS = "What is the capital of France? Answer in one sentence."


def _cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_langchain_chat_invoke_and_stream(server):
    llm = ChatOpenAI(
        base_url=f"{server}/v1", api_key=API_KEY, model=CHAT,
        temperature=0, max_tokens=40, max_retries=0, timeout=300,
    )
    reply = llm.invoke(PARIS)
    assert "Paris" in reply.content
    streamed = "".join(chunk.content for chunk in llm.stream(PARIS))
    assert streamed == reply.content


def test_langchain_embeddings(server):
    # check_embedding_ctx_length=False makes OpenAIEmbeddings send the texts as
    # strings. Its default path tokenises them with tiktoken first, and
    # tiktoken downloads its encodings on first use, which fails offline (and
    # its token ids would be OpenAI's, not this model's vocabulary anyway).
    emb = OpenAIEmbeddings(
        model=EMBED, base_url=f"{server}/v1", api_key=API_KEY,
        check_embedding_ctx_length=False, max_retries=0,
    )
    docs = emb.embed_documents([
        "The cat sat on the mat.",
        "A cat was sitting on the rug.",
        "The stock market fell sharply today.",
    ])
    assert len(docs) == 3 and all(len(v) == 384 for v in docs)
    query = emb.embed_query("A kitten is resting on a carpet.")
    assert len(query) == 384
    assert _cosine(docs[0], docs[1]) > _cosine(docs[0], docs[2])
    assert _cosine(query, docs[0]) > _cosine(query, docs[2])
