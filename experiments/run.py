"""Train and evaluate SDFL with Hydra.

    python experiments/run.py                                  # synthetic faces, a few CPU minutes
    python experiments/run.py dataset=300w dataset.root=DIR    # real 300-W folder
    python experiments/run.py -m head=sdfl,fc,gat seed=0,1     # a sweep

Configs live in pyg_sdfl/configs (so they ship with the installed package).
"""
from pyg_sdfl.experiment import main

if __name__ == "__main__":
    main()
