"""Astra-ROS: the Astra action-conditioned video world model as a learned simulator for ROS 2."""
