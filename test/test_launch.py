"""launch/world_model.launch.py: checked statically everywhere, and run where launch_ros is installed.

launch_ros cannot be installed from PyPI, so the static checks parse the launch file and setup.py
with ast: the executable it starts must be a console script that setup.py declares, the parameter
file it points at must ship in config/ (setup.py installs config/*.yaml), and the remapped names
must be topics the node really has.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from astra_ros import node_params
from astra_ros.world_model_node import NODE_NAME, TOPIC_NAMES

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "world_model.launch.py"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def _keyword(call: ast.Call, name: str) -> ast.expr:
    (value,) = [keyword.value for keyword in call.keywords if keyword.arg == name]
    return value


def _console_scripts() -> dict[str, str]:
    (setup,) = _calls(ast.parse((REPO / "setup.py").read_text()), "setup")
    entry_points = ast.literal_eval(_keyword(setup, "entry_points"))
    scripts = (line.split("=") for line in entry_points["console_scripts"])
    return {name.strip(): target.strip() for name, target in scripts}


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text())


def test_setup_installs_launch_and_config_files() -> None:
    source = (REPO / "setup.py").read_text()
    assert '"launch/*.launch.py"' in source and '"config/*.yaml"' in source


def test_node_action_names_a_real_console_script(launch_tree: ast.Module) -> None:
    (node,) = _calls(launch_tree, "Node")
    assert ast.literal_eval(_keyword(node, "package")) == "astra_ros"
    executable = ast.literal_eval(_keyword(node, "executable"))
    assert _console_scripts()[executable] == "astra_ros.world_model_node:main"
    # The node name selects the section of the parameter file.
    assert ast.literal_eval(_keyword(node, "name")) == NODE_NAME


def test_default_params_file_exists_and_has_the_node_section(launch_tree: ast.Module) -> None:
    (join,) = [call for call in _calls(launch_tree, "join") if _calls(call, "get_package_share_directory")]
    (package,) = [ast.literal_eval(arg) for arg in _calls(join, "get_package_share_directory")[0].args]
    parts = [ast.literal_eval(arg) for arg in join.args[1:]]
    assert package == "astra_ros" and parts[0] == "config"
    params_file = REPO.joinpath(*parts)
    assert params_file.is_file()
    params = yaml.safe_load(params_file.read_text())[NODE_NAME]["ros__parameters"]
    # Every value must have its parameter's type: ROS refuses 10 for a double parameter.
    specs = {spec.name: spec for spec in (*node_params.LOAD_PARAMS, *node_params.NODE_PARAMS)}
    assert set(params) <= set(specs)
    for name, value in params.items():
        assert type(value) is type(specs[name].default), name
        assert node_params.check_parameter(name, value) is None, name


def test_params_file_argument_feeds_the_node(launch_tree: ast.Module) -> None:
    (argument,) = _calls(launch_tree, "DeclareLaunchArgument")
    assert ast.literal_eval(argument.args[0]) == "params_file"
    (node,) = _calls(launch_tree, "Node")
    (config,) = _calls(_keyword(node, "parameters"), "LaunchConfiguration")
    assert ast.literal_eval(config.args[0]) == "params_file"


def test_remappings_name_real_topics(launch_tree: ast.Module) -> None:
    (node,) = _calls(launch_tree, "Node")
    remappings = ast.literal_eval(_keyword(node, "remappings"))
    assert remappings and {source for source, _ in remappings} <= set(TOPIC_NAMES)
    assert ("cmd_vel", "/robot/cmd_vel") in remappings and ("image", "/camera/image_raw") in remappings


def test_launch_description_builds_where_launch_ros_is_installed(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("launch_ros")
    # Index a share folder for astra_ros so get_package_share_directory resolves without colcon.
    index = tmp_path / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "astra_ros").touch()
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    spec = importlib.util.spec_from_file_location("world_model_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    from launch_ros.actions import Node

    description = module.generate_launch_description()
    (node,) = [entity for entity in description.entities if isinstance(entity, Node)]
    assert node.node_package == "astra_ros" and node.node_executable == "world_model_node"
    argument = description.get_launch_arguments()[0]
    assert argument.name == "params_file"
    assert argument.default_value[0].text == str(tmp_path / "share" / "astra_ros" / "config" / "world_model.yaml")
