"""Greeting logic, kept free of HTTP so it can be unit tested."""

MAX_NAME_LENGTH = 64


class InvalidName(ValueError):
    """The name cannot be greeted."""


def normalize(name):
    """Trim whitespace and collapse inner runs of spaces."""
    if name is None:
        raise InvalidName("name is required")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidName("name is empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidName("name is longer than %d characters" % MAX_NAME_LENGTH)
    if any(not (ch.isalnum() or ch in " -'.") for ch in cleaned):
        raise InvalidName("name has characters other than letters, digits, space, - ' .")
    return cleaned


def greet(name, language="en"):
    """Return the greeting for a name in a supported language."""
    templates = {
        "en": "Hello, {}!",
        "fr": "Bonjour, {} !",
        "de": "Hallo, {}!",
    }
    if language not in templates:
        raise InvalidName("unsupported language %r" % language)
    return templates[language].format(normalize(name))
