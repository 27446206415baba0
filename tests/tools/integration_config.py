"""The integration targets' variables: the Docker lab's description and where to put the results.

    python -m lab.docker describe --json | python tests/tools/integration_config.py RESULTS_DIR \\
        > <collection>/tests/integration/integration_config.yml

ansible-test integration passes integration_config.yml to every target as extra variables
(JSON is YAML): mailops_lab (the lab) and mailops_matrix_results_dir (where the mail_matrix role
writes <module>.json, which tests/matrix/render.py reads).
"""

import json
import sys


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    lab = json.load(sys.stdin)
    json.dump({'mailops_lab': lab, 'mailops_matrix_results_dir': argv[1]}, sys.stdout, indent=1)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main(sys.argv)
