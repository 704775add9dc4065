"""The demo task's data: support messages in four intents, generated deterministically (no downloads).

Templates times slot fillers give thousands of distinct sentences, so a 500-example sample is varied
enough that an untrained classifier sits near chance while a fine-tune learns the intents.
"""

from __future__ import annotations

import random

LABELS = ("billing", "shipping", "technical", "account")

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged {amount} twice on my {card} for order {order}",
        "why does my invoice for {month} show {amount} instead of the usual price",
        "please refund the {amount} you took from my {card}",
        "my subscription renewed at {amount} even though I cancelled in {month}",
        "can I get a receipt for the {amount} payment made in {month}",
        "the discount code was not applied and I paid {amount}",
        "there is an unknown charge of {amount} on my statement",
        "how do I update the {card} used for my monthly payments",
        "I need a VAT invoice for order {order}",
        "you billed me {amount} for a plan I never ordered",
    ),
    "shipping": (
        "my package for order {order} has not arrived after {days} days",
        "the tracking number for {order} has not updated since {month}",
        "can you deliver order {order} to {city} instead",
        "the courier left my parcel at the wrong address in {city}",
        "order {order} arrived damaged, the box was crushed",
        "how long does delivery to {city} usually take",
        "I received the wrong item in my parcel for order {order}",
        "is express shipping available to {city}",
        "the parcel is stuck in customs for {days} days",
        "my delivery was marked as delivered but nothing came",
    ),
    "technical": (
        "the app crashes every time I open it on my {device}",
        "I get error {code} when I try to sync my {device}",
        "the website shows a blank page after the latest update",
        "my {device} will not connect to the service since {month}",
        "the export button does nothing and the log shows error {code}",
        "notifications stopped working on my {device}",
        "the page loads very slowly and then times out with {code}",
        "after updating the firmware my {device} keeps rebooting",
        "the search feature returns no results at all",
        "uploading a file fails with error {code} on my {device}",
    ),
    "account": (
        "I cannot log in to my account, the password reset email never arrives",
        "please change the email address on my profile to a new one",
        "how do I delete my account and all my data",
        "my account was locked after {days} failed sign-in attempts",
        "I want to add a second user to my account",
        "someone else may have accessed my account from {city}",
        "two-factor authentication codes are not accepted on my {device}",
        "how do I change the username on my profile",
        "please merge my two accounts into one",
        "I forgot which email I used to sign up in {month}",
    ),
}

_SLOTS: dict[str, tuple[str, ...]] = {
    "amount": ("$12.99", "$49", "€30", "£7.50", "$199", "$5", "€120", "$74.20"),
    "card": ("credit card", "debit card", "PayPal account", "bank account", "Visa card"),
    "order": ("#10482", "#55731", "A-2291", "#90017", "B-7730", "#31415", "C-0042"),
    "month": ("January", "March", "May", "July", "September", "November", "last month"),
    "days": ("three", "five", "seven", "ten", "twelve", "two"),
    "city": ("Berlin", "Lyon", "Austin", "Osaka", "Leeds", "Porto", "Denver", "Turin"),
    "device": ("iPhone", "Android phone", "laptop", "tablet", "smart TV", "Windows PC"),
    "code": ("500", "E-104", "403", "0x80070005", "timeout-7", "502", "ERR_SYNC"),
}

_OPENINGS = ("", "Hi, ", "Hello team, ", "Hey, ", "Good morning, ", "Urgent: ", "Quick question: ")
_CLOSINGS = ("", " Thanks.", " Please help.", " Thank you in advance!", " This is frustrating.", " Regards.")


def _sentence(rng: random.Random, label: str) -> str:
    text = rng.choice(_TEMPLATES[label])
    for slot, values in _SLOTS.items():
        text = text.replace("{" + slot + "}", rng.choice(values))
    return rng.choice(_OPENINGS) + text + rng.choice(_CLOSINGS)


def make_examples(n: int, seed: int, noise: float = 0.0) -> list[dict]:
    """`n` labelled messages, balanced over LABELS; `noise` is the fraction whose label is replaced at random."""
    if n < 0 or not 0.0 <= noise <= 1.0:
        raise ValueError("n must be >= 0 and noise within [0, 1]")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        text = _sentence(rng, label)
        if noise and rng.random() < noise:
            label = rng.choice(LABELS)
        examples.append({"text": text, "label": label})
    rng.shuffle(examples)
    return examples
