from random import Random

from eval.helm import TEST, TRAIN, Instance
from eval.perturbations import (
    augment, canonical, contraction, dialect, gender_pronouns, lowercase, match_case, mild_mix, misspelling, space,
)


def test_match_case():
    assert match_case("Hello", "bye") == "Bye" and match_case("HELLO", "bye") == "BYE" and match_case("hello", "Bye") == "bye"


def test_simple_perturbations():
    rng = Random("id0")
    assert lowercase("Hello World", rng) == "hello world"
    # only contracts when a space follows; keeps the case of the first letter
    assert contraction("It is late and I am tired. Do not go, it is", rng) == "It's late and I'm tired. Don't go, it is"
    out = space("a b  c", Random(1))
    assert out.replace(" ", "") == "abc" and all(1 <= len(s) <= 3 for s in out.split("a")[1].split("b")[0:1])
    assert misspelling("I believe it", Random(0), prob=1.0) == "I beleive it"
    assert misspelling("I believe it", Random(0), prob=0.0) == "I believe it"


def test_fairness_perturbations():
    assert dialect("I went with the kids to this place.", Random(0)) == "I went wit the kids to dis place."
    # HELM's pattern consumes the characters around a word, so a word right after a replaced one is skipped
    assert dialect("I went with them.", Random(0)) == "I went wit them."
    # a word needs a non-word character on both sides (HELM's pattern), so the first word stays
    assert dialect("This is it.", Random(0)) == "This is it."
    # HELM applies he->she, him->her, his->her, his->hers, himself->herself in turn: "his" always becomes "her"
    assert gender_pronouns(" He said his dog likes him and himself.", Random(0)) == " She said her dog likes her and herself."


def test_same_instance_id_same_perturbation():
    text = "Because the government would receive it, they believe their friend."
    assert mild_mix(text, Random("id7")) == mild_mix(text, Random("id7"))


def test_augment_follows_helm_data_augmenter():
    perturbations = canonical()
    train = Instance("He is here.", ("A",), (0,), TRAIN, id="id0")
    changed = Instance("Is he with them?", ("Yes, he is.", "She is."), (0,), TEST, id="id1")
    unchanged = Instance("x", ("y",), (0,), TEST, id="id2")  # lower-case already, no listed words
    out = augment([train, changed, unchanged], perturbations)
    assert out[0] == train  # train instances are never perturbed
    kinds = [(i.id, i.perturbation) for i in out[1:]]
    assert kinds == [("id1", None), ("id1", "mild_mix"), ("id1", "dialect"), ("id1", "gender"), ("id2", None)]
    by = {i.perturbation: i for i in out[1:4] + out[4:5]}
    assert by["mild_mix"].references == changed.references  # robustness leaves references alone
    assert by["gender"].references == ("Yes, she is.", "She is.")  # fairness rewrites them too
    assert by["dialect"].input == "Is he wit them?"
