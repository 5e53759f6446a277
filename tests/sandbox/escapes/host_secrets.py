"""Files, environment variables and the platform's secrets: nothing of the host's is in reach.

On ``restricted`` these stop at the name (``open``, ``os``); on ``wasm`` the code runs, in a
guest with no preopened directory and an empty environment."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

NO_FILE = Raises("FileNotFoundError")

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
        "from treadle import _guest\nreturn _guest._host_call('fetch', "
        '\'{"url": "http://127.0.0.1:8787/"}\')',
        Rejected("from treadle import _guest"),
        wasm=Returns(
            '{"raise": {"kind": "NonRetryableError", "name": "NonRetryableError", '
            '"message": "env.fetch is only allowed inside a step body, so that its '
            'result is recorded"}}'
        ),
    ),
    Case(
        "an unknown host operation",
        "from treadle import _guest\nreturn _guest._host_call('commit', '{}')",
        Rejected("from treadle import _guest"),
        wasm=Returns(
            '{"raise": {"kind": "NonRetryableError", "name": "NonRetryableError", '
            '"message": "unknown host operation \'commit\'"}}'
        ),
    ),
]
