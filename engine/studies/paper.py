"""The papers' own numbers, as data, for side-by-side comparison with measured runs."""

from __future__ import annotations

from engine.presets import without_mixup

# LocFedMix-SL (WWW 2022) Table 3: LeNet-5 on CIFAR-10, top-1 accuracy and "Total Comm. Round".
TABLE3_CLIENTS = (20, 40, 60, 80, 100)
TABLE3_ACCURACY: dict[int, tuple[float, ...]] = {
    1: (0.5946, 0.6050, 0.6171, 0.6225, 0.6295),
    2: (0.4988, 0.4971, 0.5402, 0.5433, 0.5551),
    3: (0.4751, 0.4818, 0.4788, 0.4961, 0.4797),
    4: (0.6214, 0.6257, 0.6229, 0.6208, 0.6196),
    5: (0.5152, 0.5421, 0.5568, 0.5592, 0.5687),
    6: (0.6292, 0.6398, 0.6398, 0.6688, 0.6698),
    7: (0.6348, 0.6376, 0.6362, 0.6356, 0.6381),
    8: (0.6365, 0.6409, 0.6591, 0.6784, 0.6810),
}
TABLE3_COMM_ROUNDS: dict[int, tuple[int, ...]] = {
    1: (9770, 9680, 9600, 9760, 9390),
    2: (2970, 8900, 8890, 7990, 7950),
    3: (2190, 2170, 2130, 1940, 2470),
    4: (6270, 6090, 6360, 6130, 6400),
    5: (8940, 9230, 8980, 9090, 9820),
    6: (3750, 2460, 2300, 2020, 1840),
    7: (5520, 5670, 8160, 7240, 6860),
    8: (3590, 2470, 2060, 1340, 1960),
}
TABLE3_TECHNIQUES = {1: "1", 2: "1,2,3", 3: "1,2,4", 4: "1,2,5", 5: "1,2,3,4", 6: "1,2,3,5", 7: "1,2,4p,5",
                     8: "1,2,3,4p,5"}

# SGLR (arXiv 2112.05929): Fashion-MNIST, ResNet, Adam 1e-3, batch 8, 1,000 samples per client, n = 20.
SGLR_N20 = {"neither": 0.8488, "split_avg (phi=0.5)": 0.8659, "both (alpha=0.5)": 0.8748}


def table3_rows() -> list[dict]:
    """The paper's Table 3 as long-form rows: row, techniques, n, accuracy, comm_rounds."""
    return [{"row": row, "techniques": TABLE3_TECHNIQUES[row], "n": n, "accuracy": acc,
             "comm_rounds": TABLE3_COMM_ROUNDS[row][j]}
            for row, accs in TABLE3_ACCURACY.items() for j, (n, acc) in enumerate(zip(TABLE3_CLIENTS, accs))]


def paper_mixup_effects() -> dict[tuple[int, int], tuple[float, ...]]:
    """The paper's own effect of adding ③: (row with mixup, row without) -> accuracy difference per n
    of TABLE3_CLIENTS, for the rows that differ by mixup alone."""
    row_of = {codes: row for row, codes in TABLE3_TECHNIQUES.items()}
    return {(row, row_of[base]): tuple(a - b for a, b in zip(TABLE3_ACCURACY[row], TABLE3_ACCURACY[row_of[base]]))
            for row, codes in TABLE3_TECHNIQUES.items() if (base := without_mixup(codes)) in row_of}
