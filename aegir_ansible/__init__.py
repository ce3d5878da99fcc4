"""aegir-ansible: an Ansible backend for the Aegir hosting system."""

__version__ = "0.1.0"
