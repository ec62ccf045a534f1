"""Hostile inputs on a real server (issue 5): every bad image, request, archive, class name and
config value is a specific 4xx problem+json naming the file or field, nothing is stored half-way,
and the server stays healthy. Odd but valid images are accepted."""

from __future__ import annotations

import io
import json
import socket
import time

import pytest
from PIL import Image

from mmlop_core import open_image
from utils.factories import make_zip
from utils.hostile import (accepted_images, assert_nothing_stored, assert_problem, encode,
                           rejected_images)


def _png(color: str = "red", size: int = 8) -> bytes:
    return encode(Image.new("RGB", (size, size), color), "PNG")


def _pair() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", ("a.png", _png("red"), "image/png")),
            ("images", ("b.png", _png("blue"), "image/png"))]


@pytest.mark.parametrize("name", sorted(rejected_images()))
def test_rejected_images(hostile_stack, new_tenant, name):
    tenant_id, key = new_tenant
    data, ctype, status = rejected_images()[name]
    files = [("images", (name, data, ctype))] + _pair()
    with hostile_stack.client(key) as c:
        body = assert_problem(c.post("/adaptations", files=files,
                                     data={"labels": ["x", "x", "y"]}), status, "images[0]")
        assert name in body["detail"] or name in body["field"]
        # one statement of the fault: the name once, no library exception names or texts
        assert body["detail"].count(name) <= 1, body["detail"]
        assert not any(w in body["detail"] for w in ("Error)", "OSError", "Unidentified", "cannot identify")), body
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_rejected_image_inside_archive(hostile_stack, new_tenant):
    tenant_id, key = new_tenant
    archive = make_zip({"cat/bomb.png": rejected_images()["bomb.png"][0], "dog/a.png": _png()})
    with hostile_stack.client(key) as c:
        body = assert_problem(c.post("/adaptations", files={"archive": ("d.zip", archive)}), 413,
                              "archive:cat/bomb.png")
        assert "bomb.png" in body["detail"]
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_odd_but_valid_images_are_accepted(hostile_stack, new_tenant):
    _, key = new_tenant
    images = accepted_images()
    names = sorted(images)
    files = [("images", (n, images[n], "application/octet-stream")) for n in names]
    labels = ["even" if k % 2 == 0 else "odd" for k in range(len(names))]
    with hostile_stack.client(key) as c:
        resp = c.post("/adaptations", files=files, data={"labels": labels})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["num_images"] == len(names)
    # What the worker will decode (the one decoding path, mmlop_core.open_image): RGB, the
    # first frame of an animation, alpha on white, EXIF rotation applied.
    stored = sorted((hostile_stack.blob_root / "tenants").rglob(f"{job['id']}/uploads/*"))
    assert len(stored) == len(names)
    decoded = {n: open_image(p.read_bytes(), n) for n, p in zip(names, stored)}
    assert all(img.mode == "RGB" for img in decoded.values())
    assert decoded["rotated.jpg"].size == (20, 40)
    assert decoded["animated.gif"].getpixel((8, 8))[0] > 200  # first frame is red
    assert decoded["rgba.png"].getpixel((0, 0))[0] > 100  # blended on white, not black
    assert decoded["float32.tif"].getpixel((8, 8)) == (204, 204, 204)  # 0.8 * 255, not clipped to black


def _raw_post(port: int, head: bytes, chunks, read_timeout: float = 10.0) -> bytes:
    """Send ``head`` and then ``chunks`` on a raw socket; return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except ConnectionResetError:
            pass
        return data


def test_body_over_limit_is_refused_while_streaming(hostile_stack, new_tenant):
    tenant_id, key = new_tenant
    limit = 3 * 1024 * 1024 + 1_000_000
    head = (f"POST /adaptations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"a" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # Send just past the limit and never finish the body: a server that buffered the whole
    # body before checking could not answer at all.
    n = limit // len(piece) + 2
    part = (b'--zz\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    first = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    answer = _raw_post(hostile_stack.port, head, [first] + [chunk] * n)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/problem+json" in answer
    # A declared Content-Length above the limit is refused before any body byte is sent.
    head = (f"POST /adaptations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            f"Content-Length: {50 * 1024**3}\r\n\r\n").encode()
    t0 = time.monotonic()
    answer = _raw_post(hostile_stack.port, head, [])
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 5, answer[:300]
    with hostile_stack.client(key) as c:
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_request_limits(hostile_stack, new_tenant):
    tenant_id, key = new_tenant
    png = _png()
    with hostile_stack.client(key) as c:
        # too many files (limit 20)
        files = [("images", (f"{k}.png", png, "image/png")) for k in range(21)]
        labels = ["a", "b"] * 10 + ["a"]
        assert_problem(c.post("/adaptations", files=files, data={"labels": labels}), 413, "images")
        many = [("images", (f"{k}.png", png, "image/png")) for k in range(200)]
        assert_problem(c.post("/adaptations", files=many, data={"labels": ["a"] * 200}), 413,
                       "images")
        # one file over the per-file limit (1 MiB)
        big = [("images", ("big.png", b"\x89PNG" + b"\0" * (1024 * 1024 + 10), "image/png"))]
        assert_problem(c.post("/adaptations", files=big + _pair(),
                              data={"labels": ["a", "a", "b"]}), 413, "images[0]")
        # a zip with too many entries, and a zip bomb made of many small entries
        entries = {f"c{k % 2}/{k}.png": png for k in range(30)}
        assert_problem(c.post("/adaptations", files={"archive": ("d.zip", make_zip(entries))}),
                       413, "archive")
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_too_many_is_413_too_large_on_every_route(hostile_stack, new_tenant):
    """Just over a count limit and far over it (where the multipart parser itself stops) give the
    same answer on every route: 413 ``too-large`` naming the part. Classify with 1001 images
    used to answer 400 ``bad-multipart``."""
    from service.jobs import JobStatus
    from utils.factories import make_adaptation

    tenant_id, key = new_tenant
    png = _png()
    job_id = make_adaptation(hostile_stack.database_url, tenant_id, JobStatus.succeeded)
    classify_max = 64  # settings.classify_max_images (default)
    upload_max = 20  # LIMITS["MMLOP_UPLOAD_MAX_FILES"]

    def images(n):
        return [("images", (f"{k}.png", png, "image/png")) for k in range(n)]

    with hostile_stack.client(key) as c:
        answers = {
            "adaptations, just over": c.post("/adaptations", files=images(upload_max + 1),
                                             data={"labels": ["a", "b"] * (upload_max // 2) + ["a"]}),
            "adaptations, far over": c.post("/adaptations", files=images(1001), data={"labels": ["a"] * 1001}),
            "archive entries": c.post("/adaptations", files={"archive": ("d.zip", make_zip(
                {f"c{k % 2}/{k}.png": png for k in range(upload_max + 10)}))}),
            "classify, just over": c.post(f"/classify/{job_id}", files=images(classify_max + 1)),
            "classify, far over": c.post(f"/classify/{job_id}", files=images(1001)),
            "classify JSON": c.post(f"/classify/{job_id}", json={"images": ["aGk="] * (classify_max + 1)}),
        }
        for case, resp in answers.items():
            body = assert_problem(resp, 413)
            assert body["type"].endswith("/too-large"), (case, body)
            assert body["field"] == ("archive" if case == "archive entries" else "images"), (case, body)
        assert c.get("/adaptations").json()["total"] == 1  # only the row made above
        assert c.get("/healthz").status_code == 200


CLASS_CASES = [
    # (labels, class_names, expected field)
    (["a", "b"], ["a", "b", "c"], "class_names[2]"),              # a class with no images
    (["a", "b"], ["a", "a", "b"], "class_names"),                 # duplicate names
    (["a", "b"], ["a", " ", "b"], "class_names"),                 # empty name
    (["a", "x" * 201], None, "class_names[1]"),                   # longer than 200 characters
    (["a", "word " * 41], None, "class_names[1]"),                # longer than 40 text tokens
    (["a", "b\x00c"], None, "class_names[1]"),                    # control character
    (["Bag", "bag"], None, "class_names[1]"),                     # the tokenizer lowercases: one class twice
    (["ankle_boot", "ankle boot"], None, "class_names[1]"),       # '_' reads as a space
    (["a", "b"], ["a", "c"], "labels"),                           # label not in class_names
    (["a", " "], None, "labels"),                                 # empty label
    (["a"], None, "labels"),                                      # labels do not match images
]


@pytest.mark.parametrize("labels,class_names,field", CLASS_CASES)
def test_bad_labels_and_class_names(hostile_stack, new_tenant, labels, class_names, field):
    tenant_id, key = new_tenant
    data: dict = {"labels": labels}
    if class_names is not None:
        data["class_names"] = json.dumps(class_names)
    with hostile_stack.client(key) as c:
        assert_problem(c.post("/adaptations", files=_pair(), data=data), 422, field)
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_unicode_and_emoji_class_names_round_trip(hostile_stack, new_tenant):
    _, key = new_tenant
    names = ["chat noir \U0001F408\u200d\u2b1b", "\u72ac \u3044\u306c"]
    with hostile_stack.client(key) as c:
        resp = c.post("/adaptations", files=_pair(), data={"labels": names})
        assert resp.status_code == 202, resp.text
        assert sorted(resp.json()["class_names"]) == sorted(names)
        again = c.get(f"/adaptations/{resp.json()['id']}").json()
        assert sorted(again["class_names"]) == sorted(names)


@pytest.mark.parametrize("config,field", [
    ({"train": {"epochs": "ten"}}, "config.train"),
    ({"train": {"epochs": -1}}, "config.train"),
    ({"train": {"lr": -1}}, "config.train"),
    ({"train": {"batch_size": 1e9}}, "config.train"),
    ({"train": {"epochs": 10**6}}, "config.train"),
    ({"adapter": {"rank": -2}}, "config.adapter"),
    ({"adapter": {"preset": "nope"}}, "config.adapter"),
    ({"adapter": {"unknown": 1}}, "config.adapter"),
    ({"adapter": [1]}, "config.adapter"),
    ({"extra": {}}, "config.extra"),
    ("null-but-text", "config"),
])
def test_bad_config(hostile_stack, new_tenant, config, field):
    tenant_id, key = new_tenant
    raw = config if isinstance(config, str) else json.dumps(config)
    with hostile_stack.client(key) as c:
        assert_problem(c.post("/adaptations", files=_pair(),
                              data={"labels": ["a", "b"], "config": raw}), 422, field)
        assert_nothing_stored(hostile_stack, c, tenant_id)


_LONG_NAME = " ".join(["word"] * 40)  # 40 text tokens: the longest class name allowed


@pytest.mark.parametrize("config,labels,field", [
    # a named field: the worker used to fail with "internal error: KeyError: 'foo'"
    ({"adapter": {"template": "a photo of a {} {foo}"}}, ["a", "b"], "config.adapter.template"),
    ({"adapter": {"template": "a photo of a {0}"}}, ["a", "b"], "config.adapter.template"),
    ({"adapter": {"template": "a {} and a {}"}}, ["a", "b"], "config.adapter.template"),
    # 80 words: over the 77-token text context whatever the class names (the job used to fail later)
    ({"adapter": {"template": "a " * 80 + "photo of a {}."}}, ["a", "b"], "config.adapter.template"),
    # fits alone and with short names, not with the longest class name of this request
    ({"adapter": {"template": "a " * 36 + "photo of a {}."}}, ["a", _LONG_NAME], "config.adapter.template"),
    # the flat form names the key as written
    ({"template": "a photo of a {} {foo}"}, ["a", "b"], "config.template"),
    # control characters, as in class names (issue 12 C.6)
    ({"adapter": {"template": "a {}\u0000"}}, ["a", "b"], "config.adapter.template"),
    ({"template": "a photo of a\n{}"}, ["a", "b"], "config.template"),
    ({"adapter": {"text_init": "words", "init_words": "a\u0000b c d"}}, ["a", "b"], "config.adapter.init_words"),
    ({"init_words": "a\u0000b c d"}, ["a", "b"], "config.init_words"),
    # init_words over the text context: the job used to fail later, blaming the class name
    ({"text_init": "words", "init_words": " ".join(["word"] * 100)}, ["a", "b"], "config.init_words"),
    ({"adapter": {"text_init": "words", "init_words": " ".join(["word"] * 76)}}, ["a", "b"],
     "config.adapter.init_words"),
    ({"adapter": {"preset": "ivlp", "init_words": " ".join(["word"] * 100)}}, ["a", "b"], "config.adapter.init_words"),
    # the words init with no words
    ({"text_init": "words", "init_words": ""}, ["a", "b"], "config.init_words"),
    ({"adapter": {"text_init": "words", "init_words": "   "}}, ["a", "b"], "config.adapter.init_words"),
])
def test_bad_template_is_refused_at_submission(hostile_stack, new_tenant, config, labels, field):
    tenant_id, key = new_tenant
    with hostile_stack.client(key) as c:
        body = assert_problem(c.post("/adaptations", files=_pair(),
                                     data={"labels": labels, "config": json.dumps(config)}), 422, field)
        assert body["field"] == field
        assert "KeyError" not in body["detail"] and "IndexError" not in body["detail"]
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_template_that_fits_the_longest_name_is_accepted(hostile_stack, new_tenant):
    _, key = new_tenant
    config = {"adapter": {"template": "a " * 30 + "photo of a {}."}}  # 2 + 34 + 1 + 40 = 77 tokens at most
    with hostile_stack.client(key) as c:
        resp = c.post("/adaptations", files=_pair(), data={"labels": ["a", _LONG_NAME], "config": json.dumps(config)})
        assert resp.status_code == 202, resp.text


def test_init_words_that_fit_the_text_context_are_accepted(hostile_stack, new_tenant):
    _, key = new_tenant
    config = {"text_init": "words", "init_words": " ".join(["word"] * 75)}  # 75 + start + end = 77 tokens
    with hostile_stack.client(key) as c:
        resp = c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"], "config": json.dumps(config)})
        assert resp.status_code == 202, resp.text


def test_flat_config_maps_each_key_to_its_part(hostile_stack, new_tenant):
    _, key = new_tenant
    flat = {"preset": "mmlop", "epochs": 5, "shots": 16, "seed": 1}
    nested = {"adapter": {"preset": "mmlop"}, "train": {"epochs": 5, "shots": 16, "seed": 1}}
    with hostile_stack.client(key) as c:
        first = c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"], "config": json.dumps(flat)},
                       headers={"Idempotency-Key": "flat-or-nested"})
        assert first.status_code == 202, first.text
        job = first.json()
        assert job["adapter_config"]["preset"] == "mmlop"
        assert (job["train_config"]["epochs"], job["train_config"]["shots"], job["train_config"]["seed"]) == (5, 16, 1)
        # the same request in the nested form is the same request (replayed, not a second job)
        again = c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"], "config": json.dumps(nested)},
                       headers={"Idempotency-Key": "flat-or-nested"})
        assert again.status_code == 202 and again.json()["id"] == job["id"], again.text
        # a section and flat keys together are fine when no key is given twice
        mixed = c.post("/adaptations", files=_pair(),
                       data={"labels": ["a", "b"], "config": json.dumps({"adapter": {"preset": "ivlp"}, "epochs": 2})})
        assert mixed.status_code == 202, mixed.text
        assert mixed.json()["adapter_config"]["rank"] is None and mixed.json()["train_config"]["epochs"] == 2


@pytest.mark.parametrize("config,field", [
    ({"preset": "mmlop", "epochz": 5}, "config.epochz"),           # a key of neither part
    ({"epochs": 5, "train": {"epochs": 6}}, "config.epochs"),      # the same key flat and nested
    ({"epochs": "five"}, "config.epochs"),                         # a bad value names the flat key
    ({"preset": "nope", "epochs": 5}, "config.preset"),
    ({"train": {"epochs": -1}}, "config.train.epochs"),            # and the nested key
])
def test_bad_flat_config(hostile_stack, new_tenant, config, field):
    tenant_id, key = new_tenant
    with hostile_stack.client(key) as c:
        body = assert_problem(c.post("/adaptations", files=_pair(),
                                     data={"labels": ["a", "b"], "config": json.dumps(config)}), 422, field)
        assert body["field"] == field
        assert_nothing_stored(hostile_stack, c, tenant_id)


@pytest.mark.parametrize("route,data,field,hint", [
    # a misspelt config trained 20 epochs of defaults (a fresh user's re-check)
    ("/adaptations", {"labels": ["a", "b"], "train_config": '{"epochs": 1}'}, "train_config",
     "config"),
    ("/adaptations", {"labels": ["a", "b"], "evil": "1"}, "evil", None),
    ("/adaptations", {"Labels": ["a", "b"]}, "Labels", "labels"),
    ("/classify/zeroshot", {"class_names": ["bag", "coat"], "topk": "2"}, "topk", "top_k"),
])
def test_unknown_form_fields_are_refused_by_name(hostile_stack, new_tenant, route, data, field,
                                                 hint):
    """A multipart part the route does not take is a 422 naming it (and the closest known name),
    and nothing is stored; unknown query parameters stay ignored."""
    _, key = new_tenant
    with hostile_stack.client(key) as c:
        before = c.get("/adaptations").json()["total"]
        resp = c.post(route, files=_pair(), data=data, params={"debug": "1"})
        body = assert_problem(resp, 422, field)
        if hint:
            assert f"did you mean {hint!r}" in body["detail"], body
        assert c.get("/adaptations").json()["total"] == before
        assert c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"]},
                      params={"debug": "1"}).status_code == 202


OPEN_VOCABULARY_CASES = [
    # (class_names, status, field): the training-time checks, on /classify's open vocabulary
    (["bag", "coat\x00"], 422, "class_names[1]"),                 # NUL
    (["bag", "co\nat"], 422, "class_names[1]"),                   # newline
    (["bag", "word " * 41], 422, "class_names[1]"),               # longer than 40 text tokens
    (["bag", "x" * 201], 422, "class_names[1]"),                  # longer than 200 characters
    (["bag", "  "], 422, "class_names[1]"),                       # empty once stripped
    (["bag", "bag"], 422, "class_names[1]"),                      # duplicate
    (["Bag", "bag"], 422, "class_names[1]"),                      # read the same to the tokenizer
    (["bag"], 422, "class_names"),                                # one name always scores 1.0
    ([f"class {k}" for k in range(1001)], 413, "class_names"),    # over classify_max_class_names
    (["bag", 3], 422, "class_names[1]"),                          # not a string (was called 'empty')
    ({"bag": 1, "coat": 2}, 422, "class_names"),                  # not a list (was 'needs two names')
]


@pytest.mark.parametrize("class_names,status,field", OPEN_VOCABULARY_CASES)
def test_open_vocabulary_names_pass_the_training_checks(hostile_stack, new_tenant, class_names, status, field):
    """Issue 12 A.1: the open-vocabulary list of ``POST /classify`` is refused for exactly what a
    training upload is refused for, and capped in count (a 300-name list held the shared model
    thread for 125 s), in both the JSON and the multipart forms."""
    from service.jobs import JobStatus
    from utils.factories import make_adaptation

    tenant_id, key = new_tenant
    job_id = make_adaptation(hostile_stack.database_url, tenant_id, JobStatus.succeeded)
    with hostile_stack.client(key) as c:
        as_json = c.post(f"/classify/{job_id}", json={"images": ["aGk="], "class_names": class_names})
        as_form = c.post(f"/classify/{job_id}", files=[("images", ("a.png", _png(), "image/png"))],
                         data={"class_names": json.dumps(class_names)})
        for resp in (as_json, as_form):
            body = assert_problem(resp, status)
            assert body["field"] == field, body
            assert body["type"].endswith("/too-large") == (status == 413), body
