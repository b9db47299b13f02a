"""Read any rosbag2 recordings into training episodes, given a topic mapping (no rclpy needed).

A bag may hold any subset of the mapped action topics (a mobile-robot bag has only `cmd_vel`); each
bag is read with the topics it has. Actions are resampled onto frame times by zero-order hold and
shifted so row t is the command that produced frame t.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path

from astra_model.data import VideoEpisode, produced_by

from .bags import BagError, bag_topics, read_episode


def expand_bags(patterns: Sequence[str]) -> list[Path]:
    """Bag folders / files matching the glob `patterns`, sorted; an empty match is an error."""
    paths = sorted({Path(p) for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise FileNotFoundError(f"no bags match {list(patterns)}")
    return paths


def load_bag_episodes(
    patterns: Sequence[str],
    image_topic: str,
    action_topics: Mapping[str, str],
    joint_names: Sequence[str] | None = None,
) -> list[VideoEpisode]:
    episodes = []
    for path in expand_bags(patterns):
        present = bag_topics(path)
        topics = {m: t for m, t in action_topics.items() if t in present}
        if not topics:
            raise BagError(f"bag {path}: none of the action topics {sorted(action_topics.values())} is recorded")
        ep = read_episode(path, image_topic, topics, joint_names=joint_names)
        episodes.append(VideoEpisode(ep.frames, {m: produced_by(a) for m, a in ep.actions.items()}, str(path)))
    return episodes
