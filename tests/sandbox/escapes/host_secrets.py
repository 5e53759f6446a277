"""Files, environment variables and the platform's secrets: nothing of the host's is in reach.

On ``restricted`` these stop at the name (``open``, ``os``); on ``wasm`` the code runs, in a
guest with no preopened directory and an empty environment."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns, Suspends

NO_FILE = Raises("FileNotFoundError")
GUEST_ONLY = Rejected("from treadle_guest import _host")
# The Wasm guest's raw host import, as tenant code can call it behind the runtime's back.
RAW = """
from treadle_guest import _host


def raw(op, **args):
    return json.loads(raw_text(op, json.dumps(args)))


def raw_text(op, text):
    return _host.raw(op, text)
"""


def _refused(name: str, message: str) -> Returns:
    return Returns({"raise": {"kind": name, "name": name, "message": message}})


CASES = [
    Case(
        "open /etc/passwd", "return open('/etc/passwd').read()", Raises("NameError"), wasm=NO_FILE
    ),
    Case(
        "/proc/self/environ",
        "return open('/proc/self/environ', 'rb').read().decode()",
        Raises("NameError"),
        wasm=NO_FILE,
    ),
    Case(
        "/proc/1/environ",
        "return open('/proc/1/environ', 'rb').read().decode()",
        Raises("NameError"),
        wasm=NO_FILE,
    ),
    Case(
        "the database file in the server's cwd",
        "return open('treadle.db', 'rb').read(64)",
        Raises("NameError"),
        wasm=NO_FILE,
    ),
    Case(
        "os.environ", "import os\nreturn dict(os.environ)", Rejected("import os"), wasm=Returns({})
    ),
    Case(
        "os.getenv of the admin token",
        "import os\nreturn [os.getenv('TREADLE_ADMIN_TOKEN'), os.getenv('TREADLE_DATABASE_URL')]",
        Rejected("import os"),
        wasm=Returns([None, None]),
    ),
    Case(
        "listing the root directory",
        "import os\nreturn os.listdir('/')",
        Rejected("import os"),
        wasm=NO_FILE,
    ),
    Case(
        "the working directory",
        "import os\nreturn os.listdir(os.getcwd())",
        Rejected("import os"),
        wasm=NO_FILE,
    ),
    Case(
        "sys.modules of the host", "import sys\nreturn sorted(sys.modules)", Rejected("import sys")
    ),
    Case(
        "a socket to the database",
        "import socket\nreturn socket.create_connection(('127.0.0.1', 5432))",
        Rejected("import socket"),
        wasm=Raises("ModuleNotFoundError"),
    ),
    Case(
        "a subprocess",
        "import subprocess\nreturn subprocess.run(['id'])",
        Rejected("import subprocess"),
        wasm=Raises("ModuleNotFoundError", "OSError"),
    ),
    Case(
        "ctypes",
        "import ctypes\nreturn 1",
        Rejected("import ctypes"),
        wasm=Raises("ModuleNotFoundError"),
    ),
    Case(
        "the guest's host call outside a step",
        "from treadle_guest import _host\nreturn _host.raw('fetch', "
        '\'{"url": "http://127.0.0.1:8787/"}\')',
        Rejected("from treadle_guest import _host"),
        wasm=Returns(
            '{"raise": {"kind": "NonRetryableError", "name": "NonRetryableError", '
            '"message": "env.fetch is only allowed inside a step body, so that its '
            'result is recorded"}}'
        ),
    ),
    Case(
        "an unknown host operation",
        "from treadle_guest import _host\nreturn _host.raw('commit', '{}')",
        Rejected("from treadle_guest import _host"),
        wasm=Returns(
            '{"raise": {"kind": "NonRetryableError", "name": "NonRetryableError", '
            '"message": "unknown host operation \'commit\'"}}'
        ),
    ),
    *(
        Case(f"a forged host call: {name}", body, GUEST_ONLY, wasm=expected, prelude=RAW)
        for name, body, expected in (
            (
                "step-end with no step",
                "return raw('step-end', output='1')",
                _refused("NonRetryableError", "no step body is running"),
            ),
            (
                "step-fail with no step",
                "return raw('step-fail', kind='X', message='m', final=True)",
                _refused("NonRetryableError", "no step body is running"),
            ),
            (
                "a reserved step name",
                "return raw('step-begin', name='rollback:x')",
                _refused(
                    "ValueError",
                    "step names starting with 'rollback:' are reserved for the "
                    "records of rollback handlers",
                ),
            ),
            (
                "rollback-begin with no rollback",
                "return raw('rollback-begin', name='x', count=1)",
                _refused("NonRetryableError", "no rollback is being run"),
            ),
            (
                "unwind with nothing to undo",
                "return raw('unwind', error={'name': 'X'})",
                _refused("NonRetryableError", "there are no rollback handlers to run now"),
            ),
            (
                "a wait for an internal event type",
                "return raw('wait-for-event', name='w', type='child.someone', timeout=1)",
                Returns(
                    {
                        "raise": {
                            "kind": "ValueError",
                            "name": "ValueError",
                            "message": "an event type must be at most 100 characters of "
                            "letters, digits, '_' and '-', not starting with '-'",
                        }
                    }
                ),
            ),
            (
                "arguments that are not an object",
                "return json.loads(raw_text('sleep', '[1, 2]'))",
                _refused(
                    "NonRetryableError",
                    "host operation 'sleep': the arguments must be a JSON object",
                ),
            ),
            (
                "arguments that are not JSON",
                "return json.loads(raw_text('sleep', '{nope'))",
                _refused(
                    "NonRetryableError",
                    "host operation 'sleep': the arguments must be a JSON object",
                ),
            ),
            (
                "a second step while one runs",
                "raw('step-begin', name='x')\nreturn raw('step-begin', name='y')",
                Suspends(),
            ),
        )
    ),
]
