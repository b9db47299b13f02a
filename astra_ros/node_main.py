"""How the nodes run: rclpy with signal handling of their own.

rclpy's own SIGINT handler shuts the context down under the executor: calls in progress go unanswered
and timers may still publish into a dead context. Here SIGINT and SIGTERM only ask the loop to stop;
the node then winds down while the executor still spins (`stop_serving`), and only then is the context
shut down.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from astra_ros.node_params import StartupError

SPIN_PERIOD_S = 0.1  # how often the loop looks for a stop request


def run_node(
    name: str, make_node: Callable[[], Node], make_executor: Callable[[], Executor], args: list[str] | None
) -> int:
    """Spin the node `make_node()` builds until SIGINT or SIGTERM; 1 if it cannot start, else 0."""
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        node.stop_serving(executor)
    except ExternalShutdownException:
        pass
    except (StartupError, ParameterException) as err:
        rclpy.logging.get_logger(name).fatal(str(err))
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
