"""Follow-up questions made searchable: "and which of those use ImageNet?" needs the last turn.

`make_standalone_query` decides, without a model, whether a question can be searched as it is
(returned unchanged), is small talk ("thanks!" → "" = no search), or leans on earlier turns. Only
the last case is rewritten: by the chat model when one is given (its one-line reply is checked),
else — and whenever the model fails or answers badly — by appending the key terms of the
previous question.
"""

from __future__ import annotations

import logging
import re

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from paperchat.rag.llm import LLMUnavailableError, translate_llm_error

log = logging.getLogger(__name__)

_SMALL_TALK_WORDS = frozenset(["hi", "hello", "hey", "hiya", "yo", "thanks", "thank", "thx", "ty", "cheers",
                               "ok", "okay", "k", "great", "cool", "nice", "good", "awesome", "perfect",
                               "excellent", "wonderful", "amazing", "brilliant", "fine", "bye", "goodbye",
                               "see", "later", "morning", "evening", "afternoon", "night", "you", "so",
                               "very", "much", "a", "lot", "got", "it", "alright", "right", "sure", "yes",
                               "yeah", "yep", "no", "nope", "wow", "lol", "haha", "that's", "thats", "helps",
                               "helpful", "welcome", "appreciate", "appreciated", "understood", "makes",
                               "sense", "all", "the", "for"])
# Words that point back at an earlier turn wherever they appear.
_STRONG_REFERENCES = frozenset(["those", "them", "these", "they", "their", "theirs", "former", "latter",
                                "above", "same"])
# Words that point back only in a short question ("is it recent?"), not in "is it possible to …".
_WEAK_REFERENCES = frozenset(["it", "its", "this", "that", "one", "ones"])
_FOLLOW_UP_OPENERS = ("and ", "but ", "also ", "what about", "how about", "only ", "any other", "which one",
                      "anything else", "or ")
_QUESTION_WORDS = frozenset(["a", "an", "and", "any", "are", "as", "at", "be", "by", "can", "could", "did",
                             "do", "does", "for", "from", "had", "has", "have", "how", "i", "in", "is", "it",
                             "its", "me", "of", "on", "or", "other", "others", "please", "show", "tell",
                             "than", "that", "the", "their", "them", "these", "they", "this", "those", "to",
                             "was", "were", "what", "when", "where", "which", "who", "whom", "whose", "why",
                             "will", "with", "would", "about", "also", "but", "only", "one", "ones", "paper",
                             "papers", "study", "studies", "list", "find", "give", "me", "more", "ones",
                             "same", "above", "former", "latter", "there", "any", "some", "all"])
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.+/]*[A-Za-z0-9+]|[A-Za-z0-9]")
_SHORT_QUESTION_WORDS = 6
_MAX_QUERY_CHARS = 300

REWRITE_PROMPT = (
    "You turn the user's last message into one standalone search query for a search engine over "
    "research-paper abstracts. Use the conversation to replace words like 'those', 'it' or 'they' "
    "with what they refer to. Reply with the query only, on one line, without quotes or explanation."
)


def is_small_talk(text: str) -> bool:
    """True for greetings, thanks and acknowledgements, which need no search.

    >>> [is_small_talk(t) for t in ("hi", "thanks!", "ok great", "Thank you so much :)")]
    [True, True, True, True]
    >>> [is_small_talk(t) for t in ("hi, which papers prune ResNet-50?", "great, and for BERT?", "")]
    [False, False, False]
    """
    words = re.findall(r"[a-z']+", text.lower())
    return bool(words) and len(words) <= 8 and all(word in _SMALL_TALK_WORDS for word in words)


def needs_context(question: str) -> bool:
    """True when `question` cannot be searched without the earlier turns.

    >>> needs_context("and which of those use ImageNet?")
    True
    >>> needs_context("What about BERT?"), needs_context("Is it recent?"), needs_context("ImageNet?")
    (True, True, True)
    >>> needs_context("Which papers prune ResNet-50?")
    False
    >>> needs_context("Is it possible to prune a transformer without retraining it from scratch?")
    False
    """
    text = " ".join(question.lower().split())
    words = re.findall(r"[a-z0-9'\-]+", text)
    if not words:
        return False
    if text.startswith(_FOLLOW_UP_OPENERS) or any(word in _STRONG_REFERENCES for word in words):
        return True
    if len(words) <= _SHORT_QUESTION_WORDS and any(word in _WEAK_REFERENCES for word in words):
        return True
    return len(key_terms(question)) <= 1 and len(words) <= 3


def key_terms(text: str) -> list[str]:
    """The searchable terms of `text`, in order, case kept, question words and pronouns dropped.

    >>> key_terms("Which papers prune ResNet-50?")
    ['prune', 'ResNet-50']
    >>> key_terms("and which of those use ImageNet?")
    ['use', 'ImageNet']
    """
    seen: set[str] = set()
    terms = []
    for term in _TERM.findall(text):
        lowered = term.lower()
        if lowered in _QUESTION_WORDS or lowered in seen:
            continue
        seen.add(lowered)
        terms.append(term)
    return terms


def heuristic_standalone_query(question: str, history: list[tuple[str, str]]) -> str:
    """The previous question's key terms followed by this question's, as a search query.

    Walks back past small talk; a previous question that was itself a follow-up is first
    expanded the same way.

    >>> history = [("Which papers prune ResNet-50?", "…")]
    >>> heuristic_standalone_query("and which of those use ImageNet?", history)
    'prune ResNet-50 use ImageNet'
    >>> heuristic_standalone_query("What about BERT?", [("Who distils transformers?", "…"), ("thanks!", "…")])
    'distils transformers BERT'
    """
    earlier = _previous_question(history)
    if earlier is None:
        return question
    index, previous = earlier
    if needs_context(previous):
        previous = heuristic_standalone_query(previous, history[:index])
    terms = key_terms(previous)
    lowered = {term.lower() for term in terms}
    terms += [term for term in key_terms(question) if term.lower() not in lowered]
    return " ".join(terms) or question


def make_standalone_query(question: str, history: list[tuple[str, str]],
                          chat_model: BaseChatModel | None = None) -> str:
    """The query to search for `question`, given the earlier `(user, assistant)` turns.

    - small talk → ``""`` (no search needed);
    - a self-contained question, or the first question → returned unchanged, no model call;
    - a follow-up → rewritten by `chat_model` if given (checked; a fault or a bad reply falls
      back to the heuristic), else by `heuristic_standalone_query`.

    >>> make_standalone_query("thanks!", [])
    ''
    >>> make_standalone_query("and which of those use ImageNet?", [("Which papers prune ResNet-50?", "…")])
    'prune ResNet-50 use ImageNet'
    """
    if is_small_talk(question):
        return ""
    question = question.strip()
    if not needs_context(question) or _previous_question(history) is None:
        return question
    fallback = heuristic_standalone_query(question, history)
    if chat_model is None:
        return fallback
    try:
        reply = chat_model.invoke(_rewrite_messages(question, history))
    except Exception as exc:
        is_provider_fault = translate_llm_error(exc, where="the rewriter") is not None
        if not isinstance(exc, LLMUnavailableError) and not is_provider_fault:
            raise
        log.warning("follow-up rewrite fell back to the heuristic: %s", exc)
        return fallback
    return validated_query(str(reply.text), question, history) or fallback


def validated_query(reply: str, question: str, history: list[tuple[str, str]]) -> str | None:
    """The model's reply as a one-line query, or None when it is not a usable one.

    Usable: one short line whose terms come from the conversation (a reply that invents a topic,
    answers the question or refuses is not a query).

    >>> h = [("Which papers prune ResNet-50?", "Two do [1], [2].")]
    >>> validated_query('Query: "ResNet-50 pruning on ImageNet"', "and those on ImageNet?", h)
    'ResNet-50 pruning on ImageNet'
    >>> validated_query("I'm sorry, I cannot help with that.", "and those on ImageNet?", h) is None
    True
    """
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    query = re.sub(r"^(standalone\s+)?(search\s+)?query\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    query = query.strip().strip("\"'`").strip()
    if not query or len(query) > _MAX_QUERY_CHARS or len(query.split()) > 30:
        return None
    conversation = " ".join([question] + [user for user, _ in history[-3:]]).lower()
    terms = key_terms(query)
    if not terms:
        return None
    known = sum(1 for term in terms if term.lower()[:5] in conversation)
    if known / len(terms) < 0.5:
        return None
    return query


def _previous_question(history: list[tuple[str, str]]) -> tuple[int, str] | None:
    """(index, text) of the latest earlier user turn that is not small talk."""
    for index in range(len(history) - 1, -1, -1):
        user = history[index][0].strip()
        if user and not is_small_talk(user):
            return index, user
    return None


def _rewrite_messages(question: str, history: list[tuple[str, str]]) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(REWRITE_PROMPT)]
    for user, assistant in history[-3:]:
        messages.append(HumanMessage(user))
        messages.append(AIMessage(_clip(assistant, 400)))
    messages.append(HumanMessage(f"Last message: {question}\nStandalone search query:"))
    return messages


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
