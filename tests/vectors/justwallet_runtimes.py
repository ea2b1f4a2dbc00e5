"""Golden vectors for Just Wallet, computed by the real runtimes of its documentation's samples.

Re-run after changing a case (needs ``node``, ``php`` and ``ruby``; on Debian
``apt-get install -y php-cli ruby``)::

    .venv/bin/python -m tests.vectors.justwallet_runtimes > tests/vectors/justwallet.json

Each body goes through the formula of one sample, in that runtime, with the secret below:

- PHP/Laravel: ``hash_hmac('sha256', json_encode($request->all()), $secret)``, where
  ``$request->all()`` of a JSON request is ``(array) json_decode($content, true)``
  (associative arrays: ``{}`` becomes ``[]``), no query string, no files;
- Node/Express: ``crypto.createHmac('sha256', secret).update(JSON.stringify(req.body))
  .digest('hex')``, where ``express.json()`` (strict) parsed the body with ``JSON.parse``;
- Ruby: ``OpenSSL::HMAC.hexdigest('SHA256', secret, JSON.generate(JSON.parse(body)))``,
  compared with ``request.env['HTTP_WEBHOOK_SECRET']``.

A runtime that refuses a body (a parse or encode error) is recorded with its error. The
tests read the committed JSON only; they need none of these runtimes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

from deploy.samples import sample_body

SECRET = "jw-vector-secret-0123456789"
SAMPLE_NOW = 1_707_480_523.0  # 2024-02-09T12:08:43Z, the documentation's example time

PHP = r"""
$secret = getenv('JW_SECRET');
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $b64) {
    $content = base64_decode($b64);
    $decoded = json_decode($content, true);            // Laravel: Request::json()
    if (json_last_error() !== JSON_ERROR_NONE) {
        $out[] = ['error' => 'json_decode: ' . json_last_error_msg()];
        continue;
    }
    $all = (array) $decoded;                           // $request->all()
    $message = json_encode($all);
    if ($message === false) {
        $out[] = ['error' => 'json_encode: ' . json_last_error_msg()];
        continue;
    }
    $hmac = hash_hmac('sha256', $message, $secret);
    $out[] = ['message' => base64_encode($message), 'hmac' => $hmac];
}
echo json_encode($out);
"""

NODE = r"""
const crypto = require('crypto');
const secret = process.env.JW_SECRET;
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map((b64) => {
  const text = Buffer.from(b64, 'base64').toString('utf8');
  // express.json() with strict: true accepts only an object or an array
  const first = /^[\x20\x09\x0a\x0d]*(.)/.exec(text);
  if (!first || (first[1] !== '{' && first[1] !== '[')) {
    return { error: 'express.json: strict mode accepts objects and arrays only' };
  }
  try {
    const message = JSON.stringify(JSON.parse(text));
    const hmac = crypto.createHmac('sha256', secret).update(message).digest('hex');
    return { message: Buffer.from(message, 'utf8').toString('base64'), hmac };
  } catch (e) {
    return { error: `${e.name}: ${e.message.slice(0, 80)}` };
  }
});
process.stdout.write(JSON.stringify(out));
"""

RUBY = r"""
require 'json'
require 'openssl'
require 'base64'
secret = ENV.fetch('JW_SECRET')
out = JSON.parse(STDIN.read).map do |b64|
  body = Base64.strict_decode64(b64)                   # request.body.read: binary
  begin
    message = JSON.generate(JSON.parse(body))
    { 'message' => Base64.strict_encode64(message),
      'hmac' => OpenSSL::HMAC.hexdigest('SHA256', secret, message) }
  rescue StandardError => e
    { 'error' => "#{e.class}: #{e.message[0, 80]}" }
  end
end
print JSON.generate(out)
"""

RUNTIMES: dict[str, tuple[list[str], list[str]]] = {
    # name: (command running the script, command printing the version)
    "php": (
        ["php", "-r", PHP],
        ["php", "-r", "echo PHP_VERSION, ' serialize_precision=', ini_get('serialize_precision');"],
    ),
    "node": (["node", "-e", NODE], ["node", "--version"]),
    "ruby": (
        ["ruby", "-e", RUBY],
        ["ruby", "-rjson", "-e", "print RUBY_VERSION, ' json ', JSON::VERSION"],
    ),
}

PAYOUT = (
    '{\n  "event.type": "payout",\n  "data": {\n    "id": "po_8a7f",\n'
    '    "status": "completed",\n    "url": "https://pay.example/p/1",\n'
    '    "beneficiary": "Zoë 😀",\n    "amount": 20.0,\n'
    '    "created_at": "2024-02-09T12:08:43.000000Z"\n  }\n}'
)


def _nested(depth: int) -> str:
    return '{"event.type":"payout","data":' + "[" * depth + "]" * depth + "}"


# (name, body). Bodies are text; the runtimes get their UTF-8 bytes.
CASES: list[tuple[str, str]] = [
    ("payout as sent: pretty, non-ASCII, slash, 20.0", PAYOUT),
    ("compact, nothing to change", '{"event.type":"payout","data":{"id":"po_1"}}'),
    ("empty object", '{"event.type":"payout","data":{"id":"po_1","meta":{}}}'),
    ("nested empty arrays and objects", '{"a":[],"b":{},"c":[{}],"d":{"e":[[],{}]},"f":[[{}]]}'),
    ("zero fractions", '{"a":20.0,"b":100.0,"c":0.0,"d":-0.0,"e":1.0e2,"f":1E2,"g":2.50}'),
    ("negative zero integer", '{"a":-0,"b":0}'),
    (
        "float formatting",
        '{"a":0.1,"b":0.30000000000000004,"c":1e21,"d":1e20,"e":1e17,"f":1e16,'
        '"g":1e15,"h":123456789012345.6,"i":1234567890123456.7}',
    ),
    (
        "16 integer digits",
        '{"a":1000000000000000.5,"b":1.5e15,"c":1234567890123456.0,"d":9999999999999998.0,'
        '"e":999999999999999.9,"f":100000000000000.0,"g":12345678901234567.0}',
    ),
    (
        "small floats",
        '{"a":0.001,"b":0.0001,"c":0.00001,"d":0.000001,"e":1e-7,"f":1.5e-7,"g":5e-324,'
        '"h":2.2250738585072014e-308,"i":-0.00012}',
    ),
    ("large floats", '{"a":1.7976931348623157e308,"b":1.5e300,"c":-1.2e22,"d":4.35,"e":1e100}'),
    (
        "integers at the edges",
        '{"a":9007199254740992,"b":9007199254740993,"c":9223372036854775807,'
        '"d":9223372036854775808,"e":-9223372036854775808,"f":-9223372036854775809,'
        '"g":12345678901234567890123,"h":123456789012345680000}',
    ),
    ("float out of range", '{"a":1e400}'),
    ("integer out of double range", '{"a":1' + "0" * 400 + "}"),
    ("slashes", '{"url":"https://pay.example/p/1","escaped":"a\\/b","s":"/"}'),
    (
        "escapes and control characters",
        '{"q":"\\"","b":"\\\\","n":"\\n\\t\\r\\b\\f","c":"\\u0001\\u001f","del":"\\u007f",'
        '"html":"</script><&>\'"}',
    ),
    (
        "unicode",
        '{"e":"é","esc":"\\u00e9","emoji":"😀","pair":"\\ud83d\\ude00","ls":"\\u2028\\u2029",'
        '"bmp":"\\uffff","cjk":"支払い","é":"key"}',
    ),
    ("lone surrogate", '{"a":"\\ud800"}'),
    (
        "key order",
        '{"b":1,"a":2,"10":3,"2":4,"-1":5,"01":6,"4294967295":7,"4294967294":8,"1.5":9}',
    ),
    ("keys 0..n-1", '{"event.type":"payout","data":{"0":"a","1":"b"}}'),
    ("keys 0..n-1 out of order", '{"data":{"1":"a","0":"b"}}'),
    ("keys from 1", '{"data":{"1":"a","2":"b"}}'),
    ("nested list-like keys", '{"items":{"0":{},"1":[]},"x":{"0":{"0":1}}}'),
    ("duplicate keys", '{"a":1,"b":2,"a":3}'),
    ("__proto__ key", '{"__proto__":{"x":1},"a":1}'),
    ("literals", '{"t":true,"f":false,"n":null,"s":"","l":[true,null]}'),
    ("top-level array", '[{"event.type":"payout"},1,"x"]'),
    ("top-level string", '"payout"'),
    ("top-level null", "null"),
    ("NaN is not JSON", '{"a":NaN}'),
    ("not JSON", "payout=1&id=po_8a7f"),
    ("depth 100", _nested(99)),
    ("depth 101", _nested(100)),
    ("depth 511", _nested(510)),
    ("depth 512", _nested(511)),
    ("depth 513", _nested(512)),
]

# Bodies `webhook-bridge send` makes (deploy.samples), with the arguments that make them.
SEND_SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("send: payout sample", {"event_type": "payout", "resource_id": "po_8a7f", "now": SAMPLE_NOW}),
    (
        "send: quote_creation.failed sample",
        {"event_type": "quote_creation.failed", "now": SAMPLE_NOW},
    ),
]


def run(runtime: str, bodies: list[bytes]) -> list[dict[str, str]]:
    command, _ = RUNTIMES[runtime]
    payload = json.dumps([base64.b64encode(b).decode() for b in bodies])
    done = subprocess.run(
        command,
        input=payload.encode(),
        capture_output=True,
        check=True,
        env={"JW_SECRET": SECRET, "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    results: list[dict[str, str]] = json.loads(done.stdout)
    for result in results:
        if "message" in result:
            raw = base64.b64decode(result["message"])
            try:
                result["message"] = raw.decode("utf-8")
            except UnicodeDecodeError:  # keep bytes that are not UTF-8 exact
                del result["message"]
                result["message_b64"] = base64.b64encode(raw).decode()
    return results


def version(runtime: str) -> str:
    _, command = RUNTIMES[runtime]
    return subprocess.run(command, capture_output=True, check=True, text=True).stdout.strip()


def main() -> int:
    cases: list[dict[str, Any]] = [{"name": name, "body": body} for name, body in CASES]
    for name, kwargs in SEND_SAMPLES:
        body = sample_body("justwallet", **kwargs).decode()
        cases.append({"name": name, "body": body, "sample_args": kwargs})
    bodies = [case["body"].encode("utf-8") for case in cases]
    for runtime in RUNTIMES:
        for case, result in zip(cases, run(runtime, bodies), strict=True):
            case[runtime] = result
    document = {
        "generated_by": "python -m tests.vectors.justwallet_runtimes "
        "> tests/vectors/justwallet.json",
        "runtimes": {name: version(name) for name in RUNTIMES},
        "secret": SECRET,
        "cases": cases,
    }
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
