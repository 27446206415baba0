"""Write mail_roundtrip_batch's probe suboptions (DOCUMENTATION) from mail_roundtrip's spec:

    python tests/tools/batch_suboptions.py

tests/unit/test_docs.py fails when the two disagree; this script makes them agree again."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / 'plugins' / 'modules' / 'mail_roundtrip_batch.py'
START = '    suboptions: &roundtrip_options\n'


def main():
    collections = Path(tempfile.mkdtemp())
    (collections / 'ansible_collections' / 'mailops').mkdir(parents=True)
    os.symlink(ROOT, collections / 'ansible_collections' / 'mailops' / 'health')
    sys.path.insert(0, str(collections))
    from ansible_collections.mailops.health.plugins.module_utils._args import loose, roundtrip_spec
    lines = []
    for key, option in sorted(loose(roundtrip_spec()[0]).items()):
        lines += ['      %s:' % key, '        description: O(mailops.health.mail_roundtrip#module:%s).' % key,
                  '        type: %s' % option['type']]
        if 'choices' in option:
            lines.append('        choices: [%s]' % ', '.join(option['choices']))
        if 'elements' in option:
            lines.append('        elements: %s' % option['elements'])
    text = MODULE.read_text()
    start = text.index(START) + len(START)
    end = text.index('  defaults:\n', start)
    MODULE.write_text(text[:start] + '\n'.join(lines) + '\n' + text[end:])
    print('%s: %d probe options' % (MODULE.relative_to(ROOT), len(loose(roundtrip_spec()[0]))))


if __name__ == '__main__':
    main()
