"""Run one OpenStack Swift server or daemon for the ci/swift harness.

    $SWIFT_VENV/bin/python ci/swift/launch.py KIND CONF_FILE

KIND is one of account-server, container-server, object-server, proxy-server,
container-updater, object-updater. Runs in the foreground; start.sh puts it in the
background in its own session and sends stderr to a log file.

Same as the swift-KIND console script, with three changes that a loopback test
harness needs (Swift 2.38.3, eventlet 0.41):

1. Listen sockets are bound WITHOUT SO_REUSEPORT. eventlet.listen() sets it by
   default, so two Swift servers (say, of two harnesses started at the same time)
   could both bind the same port and the kernel would share connections between
   them. Without it the second one fails with "Address already in use", which
   start.sh notices and retries on other ports.
2. swift.conf is read from the conf's swift_dir before anything else, for daemons
   too (upstream only does that for WSGI servers; the updaters would otherwise
   insist on /etc/swift/swift.conf).
3. Logs go to stderr (the -v console handler) instead of syslog: with no /dev/log
   Swift falls back to UDP datagrams to localhost:514, which nobody reads.
"""

import logging
import os
import sys

MAINS = {
    "account-server": "swift.account.server",
    "container-server": "swift.container.server",
    "object-server": "swift.obj.server",
    "proxy-server": "swift.proxy.server",
    "container-updater": "swift.container.updater",
    "object-updater": "swift.obj.updater",
}


def swift_dir_of(conf_file):
    from configparser import ConfigParser

    cp = ConfigParser(interpolation=None, strict=False)
    cp.read(conf_file)
    return cp.get("DEFAULT", "swift_dir", fallback=os.path.dirname(os.path.abspath(conf_file)))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in MAINS:
        sys.exit("usage: launch.py {%s} CONF_FILE" % ",".join(MAINS))
    kind, conf_file = sys.argv[1], os.path.abspath(sys.argv[2])

    # 3. no syslog handler (Swift adds a console handler on stderr because of -v below)
    import swift.common.utils.logs as swift_logs

    def no_syslog(*_args, **_kwargs):
        return logging.NullHandler()

    swift_logs.ThreadSafeSysLogHandler = no_syslog

    # 1. no SO_REUSEPORT on listen sockets
    import swift.common.wsgi as swift_wsgi

    eventlet_listen = swift_wsgi.listen

    def exclusive_listen(*args, **kwargs):
        kwargs["reuse_port"] = False
        return eventlet_listen(*args, **kwargs)

    swift_wsgi.listen = exclusive_listen

    # 2. swift.conf (hash path prefix/suffix, storage policies) from swift_dir
    from swift.common import storage_policy, utils

    utils.set_swift_dir(swift_dir_of(conf_file))
    storage_policy.reload_storage_policies()

    module = __import__(MAINS[kind], fromlist=["main"])
    sys.argv = ["swift-" + kind, conf_file, "--verbose"]
    sys.exit(module.main())


if __name__ == "__main__":
    main()
