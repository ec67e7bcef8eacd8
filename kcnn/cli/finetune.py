"""``kcnn finetune``: a zoo model as the backbone of a segmenter or detector, trained on a dense dataset."""

import click

from kcnn.cli.options import TASKS, parse_options, parse_size, training_options, user_errors


@click.command("finetune")
@click.option("--backbone", required=True, help="Any zoo model (kcnn models).")
@click.option("--task", required=True, type=click.Choice(sorted(TASKS)))
@click.option("--head", help=f"The task's head ({'; '.join(f'{t}: ' + ', '.join(h) for t, h in TASKS.items())}); "
                             "default: unet from scratch, fcn with --weights; retinanet; mask_rcnn.")
@click.option("--dataset", default="shapes", show_default=True,
              help="shapes (generated, offline), a TFDS name (oxford_iiit_pet, voc/2007, voc/2012, coco/2017) "
                   "or a folder (masks layout or COCO layout).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The run directory.")
@click.option("--weights", help="Backbone initialisation: a kcnn weights file (kcnn weights import), a kcnn pretrain "
                               "run, or imagenet / torchvision / timm / keras (downloaded once: kcnn weights fetch).")
@click.option("--freeze-backbone-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train only the head for this many epochs, then everything.")
@click.option("--freeze-bn/--train-bn", default=None,
              help="Keep the backbone's BatchNorm statistics and scales fixed (default: when --weights is given).")
@click.option("--backbone-lr-factor", type=click.FloatRange(min=0),
              help="Backbone learning rate / head learning rate (default: 0.1 with --weights, else 1).")
@click.option("--image-size", callback=parse_size, help="SIZE or H,W of the network input (default: 96 for "
                                                        "shapes, else 512).")
@click.option("--recipe", help="A recipe (kcnn recipes); default: small_data from scratch (alias shapes), the "
                               "paper's with --weights (deeplabv3 / retinanet / mask_rcnn).")
@click.option("--head-option", "head_options", multiple=True, callback=parse_options,
              help="A head option KEY=VALUE (repeatable), e.g. width=128, fcn_skips=1, head_depth=2, head_norm=group "
                   "(defaults from scratch: width=64; fpn_width=64, head_width=64, head_depth=2, head_norm=group; "
                   "R-CNN: fpn_width=64, representation_size=256, sampled_rois=128, train_proposals=300, "
                   "mask_width=64; with --weights, the papers' full heads).")
@click.option("--option", "-o", "backbone_options", multiple=True, callback=parse_options,
              help="A backbone variant option KEY=VALUE (repeatable), e.g. output_stride=16 (ResNets).")
@training_options
def finetune_command(backbone, task, head, dataset, out, weights, freeze_backbone_epochs, freeze_bn, backbone_lr_factor,
                     image_size, recipe, head_options, backbone_options, **run):
    """Fine-tunes BACKBONE with a segmentation or detection head into the run directory OUT (resumable).

    \b
    Example (a CIFAR ResNet-20 FCN on the generated shapes, offline; a few steps at 64x64):
      kcnn finetune --backbone resnet20 --task segmentation --image-size 64 --head-option width=16 \\
        --steps 2 --out runs/shapes-fcn
    """
    from kcnn.train import TrainingStopped
    from kcnn.train.finetune import finetune

    with user_errors():
        try:
            rows = finetune(backbone, task, dataset, out, head=head, recipe=recipe, weights=weights,
                            image_size=image_size, freeze_backbone_epochs=freeze_backbone_epochs,
                            freeze_bn=freeze_bn, backbone_lr_factor=backbone_lr_factor,
                            backbone_options=backbone_options, head_options=head_options, **run)
        except TrainingStopped as error:
            raise ValueError(str(error)) from None
    if rows:
        last = rows[-1]
        shown = ", ".join(f"{k[4:]} {v:.4f}" for k, v in last.items() if k.startswith("val_"))
        click.echo(f"done: {last['step']} steps; val {shown}; run in {out}")
