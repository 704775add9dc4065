"""The demo task's data: support messages in four intents, generated deterministically (no downloads).

Templates times slot fillers give thousands of distinct sentences, so a 500-example sample is varied
enough that an untrained classifier sits near chance while a fine-tune learns the intents.

Two product lines. `shop` is the online shop the first model is trained on; `charger` is a new product
line (home EV chargers) whose messages use new words (wallbox, kWh, installer) and old words in new senses
("charging", "charge" now mean electricity, not money), with another label mix (mostly technical).
`demo_examples` makes the demo's harder data: some messages are ambiguous (the same words under any intent)
and some labels are wrong, so a fine-tune's held-out accuracy sits well below 1.0 (about 0.8), as real
support data does. `traffic` is the demo's live traffic: a mix of both lines, each message tagged with its line.
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

# The new product line: home EV chargers (wallboxes), installed at the customer's home. Its messages
# carry new words (wallbox, kWh, installer) and the shop's words in other senses, so a model of the shop
# line answers many of them with the wrong intent until it learns from the line's labelled feedback.
_CHARGER_TEMPLATES: dict[str, tuple[str, ...]] = {
    # Technical faults told in the shop's money words: the car was (not) charged, a charge failed.
    "technical": (
        "my wallbox charged only {pct} of the battery overnight",
        "the wallbox will not charge the car above {kw} kW since {month}",
        "every charge stops after {days} minutes and the wallbox shows {fault}",
        "the car was not charged at all, the wallbox light stays red",
        "the wallbox charges twice as slow as on the first day",
        "the charge cable is locked in the wallbox after the charge",
        "the wallbox trips the breaker every time a charge starts",
        "the charged amount of kWh stays at zero on the wallbox display",
    ),
    # Billing questions told in the shop's technical words: the app, an error, an update.
    "billing": (
        "after the app update the wallbox shows {rate} per kWh instead of the offer",
        "the wallbox app has an error in the kWh rate of {rate}",
        "the kWh counter in the wallbox app is higher than what the car used",
        "the wallbox app says my {kw} kW plan went up to {amount} after the update",
    ),
    # Installation (the line's delivery) told in the shop's account words: profile, email, sign-up.
    "shipping": (
        "my profile shows no wallbox installation booked in {city}",
        "I got an email that the wallbox installation in {city} moved to {month}",
        "the electrician has not come to mount the wallbox after {days} days",
        "I signed up for a wallbox in {month} and no installer has called",
    ),
    # Account questions told in the shop's delivery words: address, order, parcel.
    "account": (
        "the wallbox app still shows my old address in {city}",
        "please move the wallbox and its order history to my partner's name",
        "I cannot sign in to the wallbox app with the email from my order {order}",
        "the wallbox was delivered to my new house, how do I make it mine in the app",
    ),
}
_CHARGER_SLOTS: dict[str, tuple[str, ...]] = {
    "rate": ("30 cents", "0.42", "45p", "0.28 EUR", "38 cents"),
    "kw": ("7", "11", "22", "3.7", "9.6"),
    "fault": ("F12", "E-RCD", "GF-3", "PEN-7", "0x2A"),
    "pct": ("40%", "62%", "18%", "75%", "55%"),
}
# The charger line's label mix: mostly technical questions.
CHARGER_MIX: dict[str, float] = {"technical": 0.5, "billing": 0.2, "shipping": 0.15, "account": 0.15}

# Messages that say nothing about their intent: the same words under any label (irreducible error).
_AMBIGUOUS: tuple[str, ...] = (
    "I have a problem with order {order}, can someone call me",
    "nothing works the way it should since {month}",
    "please look into my case from {month} as soon as possible",
    "this is the third time I write about order {order}",
    "something is wrong with my account and order {order}",
    "I need help with my {device}, it is about order {order}",
    "can you check what happened in {month}",
    "I am still waiting for an answer about {city}",
)

_OPENINGS = ("", "Hi, ", "Hello team, ", "Hey, ", "Good morning, ", "Urgent: ", "Quick question: ")
_CLOSINGS = ("", " Thanks.", " Please help.", " Thank you in advance!", " This is frustrating.", " Regards.")


LINES = ("shop", "charger")


def _fill(rng: random.Random, text: str) -> str:
    for slots in (_SLOTS, _CHARGER_SLOTS):
        for slot, values in slots.items():
            if "{" + slot + "}" in text:
                text = text.replace("{" + slot + "}", rng.choice(values))
    return text


def _sentence(rng: random.Random, label: str, line: str = "shop", ambiguous: float = 0.0) -> str:
    if ambiguous and rng.random() < ambiguous:
        text = _fill(rng, rng.choice(_AMBIGUOUS))
    elif line == "charger":
        text = _fill(rng, rng.choice(_CHARGER_TEMPLATES[label]))
    else:
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


# The demo's data: a tenth of the messages ambiguous, 8% of the labels wrong.
DEMO_AMBIGUOUS = 0.10
DEMO_NOISE = 0.08


def demo_examples(n: int, seed: int) -> list[dict]:
    """The demo's training data (the shop line): balanced, with ambiguous messages and label noise."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        text = _sentence(rng, label, "shop", DEMO_AMBIGUOUS)
        if rng.random() < DEMO_NOISE:
            label = rng.choice(LABELS)
        examples.append({"text": text, "label": label})
    rng.shuffle(examples)
    return examples


def traffic(n: int, seed: int, new_line_share: float = 0.0) -> list[dict]:
    """`n` live messages with their true labels: {"text", "label", "line"}; a `new_line_share` of them from
    the charger line (its own label mix), the rest from the shop line (balanced). Same ambiguity as the
    training data; the true label is what the customer's ticket was finally resolved as (no noise)."""
    if n < 0 or not 0.0 <= new_line_share <= 1.0:
        raise ValueError("n must be >= 0 and new_line_share within [0, 1]")
    rng = random.Random(seed)
    charger_labels, charger_weights = zip(*CHARGER_MIX.items(), strict=True)
    out = []
    for _ in range(n):
        if rng.random() < new_line_share:
            label = rng.choices(charger_labels, charger_weights)[0]
            out.append({"text": _sentence(rng, label, "charger", DEMO_AMBIGUOUS), "label": label, "line": "charger"})
        else:
            label = rng.choice(LABELS)
            out.append({"text": _sentence(rng, label, "shop", DEMO_AMBIGUOUS), "label": label, "line": "shop"})
    return out
