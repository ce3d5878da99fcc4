# -*- coding: utf-8 -*-
# Copyright: aegir-ansible contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Jinja tests for the roles' asserts: the input rules of module_utils/aegir_rules, so a role
checks a value exactly as the CLI and the modules do (`x is aegir.hosting.aegir_safe_path`)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: aegir_rules
short_description: The input rules of aegir.hosting as Jinja tests
version_added: 0.1.0
author: aegir-ansible contributors (@aegir)
description:
  - C(aegir_hostname), C(aegir_profile), C(aegir_language), C(aegir_db_ident),
    C(aegir_db_user), C(aegir_safe_path), C(aegir_port), C(aegir_fastcgi) and
    C(aegir_listen_address) test a value against the rules the collection's modules and the
    C(aegir) CLI apply.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse a platform path the modules would refuse
  ansible.builtin.assert:
    that: aegir_platform_path is aegir.hosting.aegir_safe_path
"""

RETURN = r"""
_value:
  description: Whether the value follows the rule.
  type: boolean
"""

from ansible_collections.aegir.hosting.plugins.module_utils import aegir_rules as rules


class TestModule:
    def tests(self):
        return {
            "aegir_hostname": rules.is_hostname,
            "aegir_profile": rules.is_profile,
            "aegir_language": rules.is_language,
            "aegir_db_ident": rules.is_db_ident,
            "aegir_db_user": rules.is_db_user,
            "aegir_safe_path": rules.is_safe_path,
            "aegir_port": rules.is_port,
            "aegir_fastcgi": rules.is_fastcgi,
            "aegir_listen_address": rules.is_listen_address,
        }
