# Sourced by a peer's run.sh once it has installed what it needs: runs the rest of that script
# again in a private network namespace with only loopback up. Nothing it starts can reach
# anything but that namespace's 127.0.0.1 (e.g. restate-server's start-up version check), and
# its ports cannot collide with other jobs' listeners. W1_NO_NETNS=1 skips this.
if [ -z "${W1_IN_NETNS:-}" ] && [ "${W1_NO_NETNS:-0}" != 1 ] \
   && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
  exec env W1_IN_NETNS=1 unshare -n -- bash -c 'ip link set lo up && exec bash "$0" "$@"' \
    "$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$(basename "${BASH_SOURCE[1]}")" "$@"
fi
