"""``rsseg-data`` dataparser registration."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from nerfseg_plugin.data.dataparser import RssegDataParserConfig

rsseg_data = DataParserSpecification(
    config=RssegDataParserConfig(), description="nerfstudio scene with sparse label maps and aerial orientation"
)
