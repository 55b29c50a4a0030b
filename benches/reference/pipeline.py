#!/usr/bin/env python3
"""The pipeline a team would write instead of Listing Guard, for the side-by-side benchmark.

Same job, same contracts: consume listing events (JSON, schemas/listing_event.v1.json), fetch
each image over HTTP (requests, a pooled session, a thread pool per listing), decode it
(Pillow), read the AI declarations a team would look for (PNG text chunks of A1111, ComfyUI and
the GB 45438 AIGC label; XMP IPTC DigitalSourceType and TC260:AIGC; EXIF Software), score it
with the same NPR model exported to ONNX (onnxruntime, same crops, same calibration), apply
the default policy's rules, and produce a decision per listing (the fields of
schemas/moderation_decision.v1.json the consumers read), a label event per labelled image, and
a dead letter for a malformed event. Offsets are committed after the outputs are flushed.
An in-memory score cache by content hash stands in for the project's score cache.

It does not validate C2PA manifests or look for hidden (stealth) parameters, so it does
less work per image than Listing Guard.

Usage: pipeline.py --brokers B --input-topic T --group G --decisions-topic D --labels-topic L
                   --dlq-topic Q --model-dir models/npr-small --onnx PATH [--threads 2]
Runs until SIGTERM, then flushes, commits and exits.
"""
import argparse
import base64
import faulthandler
import hashlib
import io
import json
import math
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
import requests
from confluent_kafka import Consumer, KafkaError, Producer
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npr_onnx import build  # noqa: E402

MAX_BYTES = 20 << 20
Image.MAX_IMAGE_PIXELS = 64_000_000
GENERATORS = ("midjourney", "dall-e", "dall·e", "stable diffusion", "novelai", "firefly", "comfyui")
AI_SOURCE_TYPES = ("trainedalgorithmicmedia", "compositesynthetic", "compositewithtrainedalgorithmicmedia")
SEVERITY = {"allow": 0, "label": 1, "review": 2, "block": 3}
MESSAGES = {
    "NO_AI_SIGNAL": "no AI signal",
    "AI_DECLARED_METADATA": "the file's metadata declares AI generation",
    "AI_DETECTED_MODEL": "the pixel model finds the image AI-generated",
    "IMAGE_FETCH_FAILED": "the image could not be fetched",
    "IMAGE_DECODE_FAILED": "the image could not be decoded",
}


def parse_args():
    p = argparse.ArgumentParser()
    for a in ("brokers", "input-topic", "group", "decisions-topic", "labels-topic", "dlq-topic",
              "model-dir", "onnx"):
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allowed-host", default="127.0.0.1")
    return p.parse_args()


class Model:
    def __init__(self, model_dir, onnx_path, threads):
        card = json.load(open(f"{model_dir}/model.json"))
        self.crop = card["input"]["crop_size"]
        self.n = card["input"]["crops_per_image"]
        self.mean = np.array(card["normalisation"]["mean"], dtype=np.float32)
        self.std = np.array(card["normalisation"]["std"], dtype=np.float32)
        self.a = card["calibration"]["a"]
        self.b = card["calibration"]["b"]
        self.version = f"{card['name']}@sha256:{card['weights']['sha256'][:12]}"
        if not os.path.exists(onnx_path):
            build(model_dir, onnx_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])

    def boxes(self, w, h):
        size, n = self.crop, self.n
        if w < size or h < size:
            cw, ch = min(w, size) & ~1, min(h, size) & ~1
            if cw < 32 or ch < 32:
                return []
            return [((w - cw) // 2, (h - ch) // 2, cw, ch)]
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = -(-n // cols)
        pos = lambda i, k, span: span // 2 if k == 1 else span * i // (k - 1)  # noqa: E731
        out = []
        for r in range(rows):
            for c in range(cols):
                if len(out) < n:
                    out.append((pos(c, cols, w - size), pos(r, rows, h - size), size, size))
        return out

    def score(self, img):
        rgb = np.asarray(img, dtype=np.uint8)
        h, w = rgb.shape[:2]
        boxes = self.boxes(w, h)
        if not boxes:
            return None
        crops = [(rgb[y:y + ch, x:x + cw].astype(np.float32) / 255.0 - self.mean) / self.std
                 for x, y, cw, ch in boxes]
        batch = np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2))
        logits = self.sess.run(None, {"input": batch})[0].reshape(-1)
        sig = lambda z: 1.0 / (1.0 + math.exp(-(self.a * z + self.b)))  # noqa: E731
        probs = [sig(float(z)) for z in logits]
        return {
            "model_version": self.version,
            "ai_probability": sig(float(np.mean(logits))),
            "max_crop_probability": max(probs),
            "mean_crop_probability": sum(probs) / len(probs),
            "crop_probabilities": probs,
        }


def provenance(img, data):
    markers = []
    info = img.info
    for key in ("parameters", "prompt", "workflow"):
        if key in info:
            markers.append({"kind": "generator_parameters", "declares_ai": True,
                            "generator": "AUTOMATIC1111" if key == "parameters" else "ComfyUI",
                            "evidence": f"PNG text chunk {key}"})
    if "AIGC" in info:
        markers.append(aigc(str(info["AIGC"]), "PNG AIGC"))
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    if xmp:
        m = re.search(r"DigitalSourceType(?:>|=\")\s*([^<\"]+)", xmp)
        if m:
            declares = m.group(1).strip().rsplit("/", 1)[-1].lower() in AI_SOURCE_TYPES
            markers.append({"kind": "iptc_digital_source_type", "declares_ai": declares, "generator": None,
                            "evidence": f"XMP DigitalSourceType = {m.group(1).strip()}"})
        m = re.search(r"AIGC(?:>|=\")\s*([^<]+?)\s*(?:</|\"[\s/>])", xmp)
        if m:
            markers.append(aigc(m.group(1).replace("&quot;", '"'), "XMP TC260:AIGC"))
    try:
        exif = img.getexif()
        software = f"{exif.get(0x0131, '')} {exif.get(0x010F, '')}".lower()
        for g in GENERATORS:
            if g in software:
                markers.append({"kind": "exif_software", "declares_ai": True, "generator": g,
                                "evidence": f"EXIF Software/Make {software.strip()}"})
    except Exception:  # noqa: BLE001 - broken EXIF is not a declaration
        pass
    return {"declared_ai": any(m["declares_ai"] for m in markers), "markers": markers}


def aigc(text, where):
    try:
        obj = json.loads(text)
        label, producer = str(obj.get("Label", "")), obj.get("ContentProducer") or None
    except (ValueError, AttributeError):
        label, producer = "", None
    return {"kind": "tc260_aigc", "declares_ai": label in ("1", "2", "3"), "generator": producer,
            "evidence": f"{where} Label={label}"}


class Pipeline:
    def __init__(self, args):
        self.args = args
        self.model = Model(args.model_dir, args.onnx, args.threads)
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=16))
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.cache = {}
        self.consumer = Consumer({
            "bootstrap.servers": args.brokers, "group.id": args.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
        })
        self.producer = Producer({
            "bootstrap.servers": args.brokers, "acks": "all", "linger.ms": 5,
            "enable.idempotence": False,
        })
        self.stop = False
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))

    def fetch(self, url):
        host = urlparse(url).hostname
        if host != self.args.allowed_host:
            raise ValueError(f"forbidden host {host}")
        with self.http.get(url, timeout=10, stream=True) as r:
            r.raise_for_status()
            data = r.raw.read(MAX_BYTES + 1, decode_content=True)
        if len(data) > MAX_BYTES:
            raise ValueError("image too large")
        return data

    def analyse(self, url):
        try:
            data = self.fetch(url)
        except Exception as e:  # noqa: BLE001
            return {"failure": {"class": "fetch_error", "message": str(e)}}
        sha = hashlib.sha256(data).hexdigest()
        if sha in self.cache:
            return self.cache[sha]
        out = {"content_sha256": sha}
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            out["provenance"] = provenance(img, data)
            upright = ImageOps.exif_transpose(img).convert("RGB")
            out["dimensions"] = [upright.width, upright.height]
            out["model"] = self.model.score(upright)
        except Exception as e:  # noqa: BLE001
            out["failure"] = {"class": "decode_error", "message": str(e)}
            out.setdefault("provenance", {"declared_ai": False, "markers": []})
        self.cache[sha] = out
        return out

    def image_action(self, event, role, a):
        xianyu = event["marketplace"] == "xianyu"
        if "failure" in a:
            return "review", "IMAGE_FETCH_FAILED" if a["failure"]["class"] == "fetch_error" else "IMAGE_DECODE_FAILED"
        if a["provenance"]["declared_ai"]:
            act = "block" if xianyu else "review" if event["category"] == "beauty" else "label"
            return act, "AI_DECLARED_METADATA"
        m = a.get("model")
        if m and m["ai_probability"] >= 0.9:
            act = ("block" if xianyu else "review") if role == "main" else ("review" if xianyu else "label")
            return act, "AI_DETECTED_MODEL"
        return "allow", "NO_AI_SIGNAL"

    def process(self, msg, received):
        payload = msg.value() or b""
        try:
            event = json.loads(payload)
            for k in ("event_id", "listing_id", "marketplace", "category", "images"):
                if k not in event:
                    raise ValueError(f"missing field {k}")
        except Exception as e:  # noqa: BLE001
            self.producer.produce(self.args.dlq_topic, key=msg.key(), value=json.dumps({
                "schema_version": 1, "error_class": "malformed_json", "error_message": str(e),
                "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
                "payload_base64": base64.b64encode(payload).decode(),
                "payload_sha256": hashlib.sha256(payload).hexdigest(),
                "rejected_at": datetime.now(timezone.utc).isoformat()}).encode())
            return
        images = event["images"]
        analyses = list(self.pool.map(self.analyse, [i["url"] for i in images]))
        decided = []
        for img, a in zip(images, analyses):
            act, code = self.image_action(event, img.get("role", "main"), a)
            decided.append({
                "image_id": img["image_id"], "url": img["url"], "role": img.get("role", "main"),
                "content_sha256": a.get("content_sha256"), "dimensions": a.get("dimensions"),
                "failure": a.get("failure"),
                "signals": {"provenance": a.get("provenance"), "model": a.get("model")},
                "action": act, "reasons": [{"code": code, "message": MESSAGES[code]}],
            })
        action = max((d["action"] for d in decided), key=SEVERITY.get, default="allow")
        versions = {"policy": "reference-default", "provenance_detector": "reference",
                    "model": self.model.version, "pipeline": "reference-python"}
        decision_id = hashlib.sha256(payload + json.dumps(versions).encode()).hexdigest()[:32]
        decision = {
            "schema_version": 1, "decision_id": decision_id, "mode": "live",
            "event_id": event["event_id"], "event_type": event.get("event_type"),
            "listing_id": event["listing_id"], "merchant_id": event.get("merchant_id", ""),
            "marketplace": event["marketplace"], "category": event["category"],
            "action": action,
            "reasons": [{"code": c, "message": MESSAGES[c]}
                        for c in sorted({r["code"] for d in decided for r in d["reasons"]})],
            "images": decided, "versions": versions,
            "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            "occurred_at": event.get("occurred_at"),
            "decided_at": datetime.now(timezone.utc).isoformat(),
            "processing_latency_ms": int((time.monotonic() - received) * 1000),
        }
        key = event["listing_id"].encode()
        self.producer.produce(self.args.decisions_topic, key=key, value=json.dumps(decision).encode())
        for d in decided:
            if d["action"] == "label":
                declared = d["reasons"][0]["code"] == "AI_DECLARED_METADATA"
                self.producer.produce(self.args.labels_topic, key=key, value=json.dumps({
                    "schema_version": 1,
                    "label_id": hashlib.sha256(f"{decision_id}/{d['image_id']}".encode()).hexdigest()[:32],
                    "decision_id": decision_id, "event_id": event["event_id"],
                    "listing_id": event["listing_id"], "marketplace": event["marketplace"],
                    "image_id": d["image_id"], "content_sha256": d["content_sha256"],
                    "visible_label": {"zh": "AI生成", "en": "AI-generated"},
                    "basis": "declared_in_metadata" if declared else "detected",
                    "implicit_label": {
                        "Label": "1" if declared else "3", "ContentProducer": "", "ProduceID": "",
                        "ReservedCode1": "", "ContentPropagator": "listing-guard-marketplace",
                        "PropagateID": f"{event['listing_id']}/{d['image_id']}",
                        "ReservedCode2": d["content_sha256"] or ""},
                    "policy_version": versions["policy"]}).encode())

    def run(self):
        self.consumer.subscribe([self.args.input_topic])
        since_commit = 0
        while not self.stop:
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"consumer error: {msg.error()}", file=sys.stderr)
                continue
            self.process(msg, time.monotonic())
            self.producer.poll(0)
            since_commit += 1
            if since_commit >= 50:
                self.producer.flush(30)
                self.consumer.commit(asynchronous=False)
                since_commit = 0
        self.producer.flush(30)
        try:
            self.consumer.commit(asynchronous=False)
        except Exception:  # noqa: BLE001 - nothing consumed since the last commit
            pass
        self.consumer.close()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints every thread's stack
    Pipeline(parse_args()).run()
